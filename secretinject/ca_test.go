package secretinject

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v mode %v, want %v", f, err, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode().Perm())
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil || !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Fatalf("reload gave another CA (%v)", err)
	}
	// A lost certificate is re-issued from the same key.
	os.Remove(filepath.Join(dir, CACertFile))
	re, err := LoadOrCreateCA(dir)
	if err != nil || !re.key.Equal(ca.key) {
		t.Fatalf("re-issue: %v", err)
	}
	// A key others can read is refused, clearly.
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	// Nothing else lies in the directory (no temporary files, no leaves).
	ca.Leaf("x.example")
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("dir holds %d entries", len(ents))
	}
}

func testCA(t testing.TB) *CA {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLeafVerifies(t *testing.T) {
	ca := testCA(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	for _, host := range []string{"api.example.com", "API.Example.com.", "203.0.113.7", "[2001:db8::1]:443"} {
		c, err := ca.Leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		name := normHost(host)
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
		if d := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); d > LeafValidity+leafBackdate {
			t.Errorf("%s: valid for %v", host, d)
		}
	}
	if _, err := ca.Leaf(""); err == nil {
		t.Error("empty host minted a leaf")
	}
}

func TestLeafCache(t *testing.T) {
	ca := testCA(t)
	now := time.Now()
	ca.now = func() time.Time { return now }
	a, _ := ca.Leaf("a.example")
	if b, _ := ca.Leaf("A.example."); a != b {
		t.Error("same host minted twice")
	}
	now = now.Add(leafRenewAfter + time.Minute)
	if b, _ := ca.Leaf("a.example"); a == b {
		t.Error("an old leaf was not renewed")
	}
	ca.max = 3
	for _, h := range []string{"1.ex", "2.ex", "3.ex", "4.ex"} {
		ca.Leaf(h)
	}
	if ca.lru.Len() != 3 || ca.byHost["a.example"] != nil {
		t.Errorf("cache holds %d, oldest still there: %v", ca.lru.Len(), ca.byHost["a.example"] != nil)
	}
}

func TestLeafSingleflight(t *testing.T) {
	ca := testCA(t)
	var wg sync.WaitGroup
	got := make([]*tls.Certificate, 100)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = ca.Leaf("burst.example")
		}()
	}
	wg.Wait()
	for _, c := range got {
		if c == nil || c != got[0] {
			t.Fatal("concurrent first requests minted more than one leaf")
		}
	}
}

// A client trusting the trust bundle reaches a server using ServerConfig.
func TestServerConfigAndTrustBundle(t *testing.T) {
	ca := testCA(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.TLS = ca.ServerConfig()
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	bundle := ca.TrustBundle([]byte("-----BEGIN CERTIFICATE-----\nbogus\n-----END CERTIFICATE-----"))
	if !bytes.HasSuffix(bundle, ca.CertPEM()) || !bytes.HasPrefix(bundle, []byte("-----BEGIN")) {
		t.Fatal("bundle does not keep the system roots and add the CA")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api.example.com"}, ForceAttemptHTTP2: true}
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" {
		t.Errorf("proto %s", b)
	}
	// No SNI: refused (httptest adds its own certificate, so use a bare
	// listener here).
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Error("handshake without SNI succeeded")
	}
}

func TestTrustEnvAndBundlePath(t *testing.T) {
	env := TrustEnv("/etc/ssl/certs/ca-certificates.crt")
	if len(env) != 5 || env[0] != "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" {
		t.Errorf("env %q", env)
	}
	root := t.TempDir()
	if p, b, err := FindSystemBundle(root); err != nil || p != DefaultBundlePath || b != nil {
		t.Errorf("empty image: %q %q %v", p, b, err)
	}
	os.MkdirAll(filepath.Join(root, "etc/pki/tls/certs"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt"), []byte("PEM"), 0o644)
	if p, b, _ := FindSystemBundle(root); p != "/etc/pki/tls/certs/ca-bundle.crt" || string(b) != "PEM" {
		t.Errorf("rhel image: %q %q", p, b)
	}
	// A link out of the image is not followed.
	os.MkdirAll(filepath.Join(root, "etc/ssl/certs"), 0o755)
	host := filepath.Join(t.TempDir(), "host-secret")
	os.WriteFile(host, []byte("HOST"), 0o644)
	os.Symlink(host, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
	if p, b, _ := FindSystemBundle(root); string(b) == "HOST" {
		t.Errorf("followed a link out of the image: %q", p)
	}
}

func TestUpstreamRoots(t *testing.T) {
	ca := testCA(t)
	f := filepath.Join(t.TempDir(), "up.pem")
	os.WriteFile(f, ca.CertPEM(), 0o644)
	pool, err := UpstreamRoots(f)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ca.Leaf("up.example")
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "up.example", Roots: pool}); err != nil {
		t.Error(err)
	}
	os.WriteFile(f, []byte("nothing"), 0o644)
	if _, err := UpstreamRoots(f); err == nil {
		t.Error("a file without certificates was accepted")
	}
	if cfg := UpstreamConfig("Up.Example.", pool, nil); cfg.InsecureSkipVerify || cfg.ServerName != "up.example" {
		t.Errorf("upstream config %+v", cfg)
	}
}
