package secretinject

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Files of msbd's CA under the directory given to LoadOrCreateCA.
const (
	CAKeyFile  = "ca.key" // PKCS#8 ECDSA P-256, mode 0600: never readable by sandboxes
	CACertFile = "ca.crt" // mode 0644: this is what sandboxes trust
)

// Leaf certificate policy. Leaves live only in memory (the state directory
// holds nothing unencrypted that is new), so a short life costs nothing but
// a signature now and then.
const (
	LeafValidity   = 24 * time.Hour
	leafRenewAfter = 18 * time.Hour // re-mint with 6h left, before any client sees it expire
	leafBackdate   = time.Hour      // tolerate a sandbox clock a little behind
	caValidity     = 10 * 365 * 24 * time.Hour
	caRenewWithin  = 30 * 24 * time.Hour
	// DefaultLeafCacheSize bounds the leaves kept; a sandbox talks to few
	// secret hosts, so 1024 covers every host of every sandbox in practice.
	DefaultLeafCacheSize = 1024
)

// CA is msbd's own certificate authority. It signs the leaves the egress
// proxy presents when it terminates TLS to a host that needs substitution;
// it never signs anything else. Safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey

	// now is the clock (tests move it).
	now func() time.Time

	mu       sync.Mutex
	max      int
	lru      *list.List               // of *leafEntry, most recent first
	byHost   map[string]*list.Element // host -> element in lru
	inflight map[string]*leafCall     // singleflight: one mint per host at a time
}

type leafEntry struct {
	host  string
	cert  *tls.Certificate
	renew time.Time // mint a fresh one from here on
}

type leafCall struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// LoadOrCreateCA loads the CA kept in dir, or creates it there on first
// use (dir is made 0700). The key must be mode 0600 or stricter: a key
// that group or others can read is refused rather than used, since anyone
// holding it can mint certificates every sandbox trusts. A certificate that
// is missing, does not match the key, or expires within 30 days is
// re-issued from the same key, so sandboxes keep trusting the same key.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	key, err := loadKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("ca: generate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		os.Remove(certPath) // a certificate of some older key is worthless
	} else if err != nil {
		return nil, err
	}
	ca := newCA(key, time.Now)
	if cert, certPEM, err := loadCert(certPath); err == nil && ca.usable(cert) {
		ca.cert, ca.certPEM = cert, certPEM
		return ca, nil
	}
	if err := ca.selfSign(); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, ca.certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return ca, nil
}

func newCA(key *ecdsa.PrivateKey, now func() time.Time) *CA {
	return &CA{
		key: key, now: now, max: DefaultLeafCacheSize,
		lru: list.New(), byHost: map[string]*list.Element{}, inflight: map[string]*leafCall{},
	}
}

func loadKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ca: key %s has mode %#o: group or others may read it; refusing to use it (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("ca: %s holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("ca: %s is not an ECDSA key", path)
	}
	return ek, nil
}

func loadCert(path string) (*x509.Certificate, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, errors.New("no certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	return c, pem.EncodeToMemory(blk), err
}

// usable: cert belongs to our key, is a CA, and is not about to expire.
func (ca *CA) usable(c *x509.Certificate) bool {
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(&ca.key.PublicKey) && c.IsCA &&
		ca.now().Add(caRenewWithin).Before(c.NotAfter)
}

func (ca *CA) selfSign() error {
	host, _ := os.Hostname()
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"msb"}, CommonName: "msb egress CA " + host},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("ca: self-sign: %w", err)
	}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// writeFileAtomic writes through a temporary file and a rename, so a crash
// never leaves half a key behind; the mode is set before any byte lands.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// CertPEM is the CA certificate, PEM-encoded: what sandboxes trust.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Certificate is the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Leaf returns a certificate for host (a DNS name, or an IP address, which
// gets an IP SAN), signed by the CA and valid for LeafValidity. Leaves are
// kept in a bounded in-memory LRU and never written anywhere; one that has
// little life left is replaced. Concurrent first requests for the same host
// wait for a single mint.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	host = normHost(host)
	if host == "" {
		return nil, errors.New("ca: leaf for an empty host")
	}
	now := ca.now()
	ca.mu.Lock()
	if el, ok := ca.byHost[host]; ok {
		e := el.Value.(*leafEntry)
		if now.Before(e.renew) {
			ca.lru.MoveToFront(el)
			ca.mu.Unlock()
			return e.cert, nil
		}
	}
	if c, ok := ca.inflight[host]; ok {
		ca.mu.Unlock()
		<-c.done
		return c.cert, c.err
	}
	c := &leafCall{done: make(chan struct{})}
	ca.inflight[host] = c
	ca.mu.Unlock()

	c.cert, c.err = ca.mint(host, now)

	ca.mu.Lock()
	delete(ca.inflight, host)
	if c.err == nil {
		ca.put(&leafEntry{host: host, cert: c.cert, renew: now.Add(leafRenewAfter)})
	}
	ca.mu.Unlock()
	close(c.done)
	return c.cert, c.err
}

// put stores e as the most recent entry, evicting the least recent beyond
// the bound. ca.mu is held.
func (ca *CA) put(e *leafEntry) {
	if el, ok := ca.byHost[e.host]; ok {
		el.Value = e
		ca.lru.MoveToFront(el)
		return
	}
	ca.byHost[e.host] = ca.lru.PushFront(e)
	for ca.lru.Len() > ca.max {
		old := ca.lru.Back()
		ca.lru.Remove(old)
		delete(ca.byHost, old.Value.(*leafEntry).host)
	}
}

func (ca *CA) mint(host string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ca: leaf for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// normHost lowercases host and strips a trailing dot, IPv6 brackets and a
// port, so "API.example.com.:443" and "api.example.com" share a leaf.
func normHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	return strings.ToLower(host)
}
