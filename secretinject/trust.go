package secretinject

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Where images keep their system CA bundle, in the order they are tried.
// The sandbox gets msbd's CA added to the bundle it already has, at that
// same path, so tools that ignore the environment variables (they read the
// distribution's compiled-in path) trust it too.
var SystemBundlePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch, Gentoo
	"/etc/pki/tls/certs/ca-bundle.crt",   // RHEL, Fedora, CentOS, Amazon Linux
	"/etc/ssl/ca-bundle.pem",             // openSUSE, SLES
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem", // Alpine (link), macOS-like, LibreSSL
}

// DefaultBundlePath is where the bundle goes in an image that has none
// (scratch, distroless-static): the path Go, OpenSSL and curl try first.
const DefaultBundlePath = "/etc/ssl/certs/ca-certificates.crt"

// TrustEnvVars are the variables TrustEnv sets, one per family of clients:
// Go and OpenSSL (SSL_CERT_FILE), Python requests, curl, Node (which adds
// the file to its built-in roots) and git.
var TrustEnvVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO"}

// FindSystemBundle looks in the image's root filesystem for its CA bundle
// and returns where it is and what it holds. Symbolic links are resolved
// inside rootfs only (os.Root), so an image cannot make msbd read a host
// file. An image without a bundle gets DefaultBundlePath and no data.
func FindSystemBundle(rootfs string) (path string, pemData []byte, err error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return "", nil, fmt.Errorf("trust bundle: %w", err)
	}
	defer root.Close()
	for _, p := range SystemBundlePaths {
		b, err := root.ReadFile(p[1:])
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			// A dangling or escaping link, a directory: try the next.
			continue
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		return p, b, nil
	}
	return DefaultBundlePath, nil, nil
}

// TrustBundle returns the image's own bundle followed by msbd's CA: the
// sandbox keeps trusting every root it had and also trusts the leaves the
// proxy presents. Mount the result read-only at the bundle's path.
func (ca *CA) TrustBundle(systemBundle []byte) []byte {
	out := make([]byte, 0, len(systemBundle)+len(ca.certPEM)+64)
	out = append(out, systemBundle...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, "# msb egress CA: substitutes secrets for this sandbox\n"...)
	return append(out, ca.certPEM...)
}

// TrustEnv returns NAME=path for each of TrustEnvVars, to add to the
// environment of a sandbox that references a Secret (the user's own
// settings of these names should win: add only those not set).
func TrustEnv(path string) []string {
	env := make([]string, len(TrustEnvVars))
	for i, v := range TrustEnvVars {
		env[i] = v + "=" + path
	}
	return env
}

// ServerConfig is the tls.Config the proxy terminates intercepted TLS
// with: the leaf comes from the ClientHello's SNI (the proxy has already
// checked SNI against Host and the pinned address); a hello without SNI is
// refused rather than given some default certificate. It offers h2 and
// http/1.1.
func (ca *CA) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName == "" {
				return nil, errors.New("no SNI: nothing to intercept for")
			}
			return ca.Leaf(h.ServerName)
		},
	}
}

// UpstreamRoots is the pool the proxy verifies upstream servers against:
// the host's system roots plus, when extraCAFile is not empty, every
// certificate in that PEM file (msbd --upstream-ca, for private or test
// CAs). msbd's own CA is never in it. Verification is never skipped.
func UpstreamRoots(extraCAFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if extraCAFile == "" {
		return pool, nil
	}
	b, err := os.ReadFile(extraCAFile)
	if err != nil {
		return nil, fmt.Errorf("upstream CA: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("upstream CA: %s holds no PEM certificate", extraCAFile)
	}
	return pool, nil
}

// UpstreamConfig is the client tls.Config for the re-encrypted leg to host:
// full verification against roots, SNI set to host, the ALPN the sandbox
// negotiated offered first (pass nil to offer h2 and http/1.1).
func UpstreamConfig(host string, roots *x509.CertPool, alpn []string) *tls.Config {
	if alpn == nil {
		alpn = []string{"h2", "http/1.1"}
	}
	return &tls.Config{ServerName: normHost(host), RootCAs: roots, NextProtos: alpn, MinVersion: tls.VersionTLS12}
}
