package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
)

// fakeDecider stands in for netpolicy.Engine: one sandbox at 127.0.0.1,
// domain rules that pin each name to one destination, and IP rules.
type fakeDecider struct {
	mu      sync.Mutex
	sb      netpolicy.Sandbox
	names   map[string]netip.AddrPort // allowed name → the address it is pinned to
	ips     map[netip.AddrPort]bool   // destinations an IP rule allows
	records []netpolicy.Decision
}

func newFake() *fakeDecider {
	return &fakeDecider{
		sb:    netpolicy.Sandbox{ID: "sb-1", Namespace: "default", Name: "one", IP: netip.MustParseAddr("127.0.0.1")},
		names: map[string]netip.AddrPort{},
		ips:   map[netip.AddrPort]bool{},
	}
}

func (f *fakeDecider) allowName(name string, dst netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names[name] = dst
}

func (f *fakeDecider) Sandbox(src netip.Addr) (netpolicy.Sandbox, bool) {
	if src == f.sb.IP {
		return f.sb, true
	}
	return netpolicy.Sandbox{}, false
}

func (f *fakeDecider) AllowName(netip.Addr, string, uint16) netpolicy.Decision {
	return netpolicy.Decision{}
}

func (f *fakeDecider) AllowConn(src netip.Addr, name string, dst netip.AddrPort) netpolicy.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := netpolicy.Decision{Name: name, Addr: dst.Addr(), Port: dst.Port()}
	switch pinned, ok := f.names[name]; {
	case f.ips[dst]:
		d.Allowed, d.Rule = true, "test/ip"
	case name != "" && ok && pinned == dst:
		d.Allowed, d.Rule = true, "test/domain "+name
	case name != "" && ok:
		d.Reason = "address not pinned to name"
	default:
		d.Reason = "no policy allows this name"
	}
	return d
}

func (f *fakeDecider) IPRuleCovers(netip.Addr, netip.Addr) bool          { return false }
func (f *fakeDecider) Pin(netip.Addr, string, netip.Addr, time.Duration) {}
func (f *fakeDecider) Record(d netpolicy.Decision) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, d)
}

func (f *fakeDecider) decisions() []netpolicy.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netpolicy.Decision(nil), f.records...)
}

// waitDecision waits (bounded) for a recorded decision matching ok.
func (f *fakeDecider) waitDecision(t *testing.T, ok func(netpolicy.Decision) bool) netpolicy.Decision {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, d := range f.decisions() {
			if ok(d) {
				return d
			}
		}
	}
	t.Fatalf("no matching decision among %+v", f.decisions())
	return netpolicy.Decision{}
}

// startProxy runs a proxy on loopback whose "original destination" is
// whatever *dst holds when a connection arrives.
func startProxy(t testing.TB, d netpolicy.Decider, dst *netip.AddrPort, tweak func(*Options)) (*Proxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	o := Options{
		Decider:     d,
		DialTimeout: 2 * time.Second,
		PeekTimeout: 2 * time.Second,
		OriginalDst: func(net.Conn) (netip.AddrPort, error) {
			mu.Lock()
			defer mu.Unlock()
			return *dst, nil
		},
	}
	if tweak != nil {
		tweak(&o)
	}
	p := New(o)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p, ln.Addr().String()
}

func addrPort(t testing.TB, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// testPKI is a CA and a leaf for names under msb.test (a reserved TLD).
type testPKI struct {
	pool *x509.CertPool
	leaf tls.Certificate
}

func newPKI(t testing.TB, names ...string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "msb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testPKI{pool: pool, leaf: tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}}
}

// waitGoroutines waits (bounded) for the goroutine count to drop to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = runtime.NumGoroutine(); got <= n {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("%d goroutines, want <= %d:\n%s", got, n, buf[:runtime.Stack(buf, true)])
}

// readAllBounded reads c until EOF or error, with a deadline so a bug
// cannot hang the test.
func readAllBounded(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}
