package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// internet is the hermetic stand-in for the world ../shared/TESTING.md asks
// for: a network namespace joined to msbd's namespace by a veth pair, msbd's
// only way out (its default route), holding public stand-ins on documentation
// addresses, a private-range host, a stand-in for the cloud metadata address
// and a DNS server for a test zone. Nothing there routes off the machine.
type internet struct {
	ns  string
	dns string // "IP:53", for msbd --dns-upstream
	ca  *testCA

	mu       sync.Mutex
	requests []seenRequest // what api.test received
	queries  []string      // every name the DNS server was asked
}

func (in *internet) dnsQueries() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.queries...)
}

// seenRequest is what the api.test stand-in received: the secret-injection
// tests check the real value arrived, and that nothing arrived when a leak
// was blocked.
type seenRequest struct {
	TLS           bool
	Host          string
	Authorization string
	Body          string
}

func (in *internet) apiRequests() []seenRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]seenRequest(nil), in.requests...)
}

// The stand-ins. Names resolve in the test zone served at inetDNS.
const (
	inetDNS      = "203.0.113.53"
	inetAllowed  = "203.0.113.10"  // allowed.test
	inetOther    = "198.51.100.10" // other.test
	inetPrivate  = "10.77.0.5"     // rebind.test points here
	inetMetadata = "169.254.169.254"
	inetAPI      = "203.0.113.20" // api.test: records what it receives
)

var testZone = map[string]string{
	"allowed.test.": inetAllowed,
	"other.test.":   inetOther,
	"rebind.test.":  inetPrivate,
	"meta.test.":    inetMetadata,
	"api.test.":     inetAPI,
}

// newInternet attaches an internet to network namespace hostNS (where msbd
// runs) and serves it until the test ends.
// Its TLS servers present certificates of ca (a fresh one when nil).
func newInternet(t *testing.T, hostNS string, ca *testCA) *internet {
	t.Helper()
	if ca == nil {
		ca = newTestCA(t)
	}
	in := &internet{ns: newNetns(t, "msbinet-"), dns: inetDNS + ":53", ca: ca}
	var b [3]byte
	rand.Read(b[:])
	// Not "msb…": msbd treats interfaces named so as sandboxes'.
	hostEnd, inetEnd := "e2eh"+hex.EncodeToString(b[:]), "e2ei"+hex.EncodeToString(b[:])
	mustRun(t, "ip", "link", "add", hostEnd, "type", "veth", "peer", "name", inetEnd)
	mustRun(t, "ip", "link", "set", hostEnd, "netns", hostNS)
	mustRun(t, "ip", "link", "set", inetEnd, "netns", in.ns)
	mustRun(t, "ip", "-n", hostNS, "addr", "add", "192.168.250.1/30", "dev", hostEnd)
	mustRun(t, "ip", "-n", hostNS, "link", "set", hostEnd, "up")
	mustRun(t, "ip", "-n", hostNS, "route", "add", "default", "via", "192.168.250.2")
	mustRun(t, "ip", "-n", in.ns, "addr", "add", "192.168.250.2/30", "dev", inetEnd)
	mustRun(t, "ip", "-n", in.ns, "link", "set", inetEnd, "up")
	// The stand-ins are local addresses of the internet namespace.
	for _, a := range []string{inetDNS + "/32", inetAllowed + "/32", inetOther + "/32", inetPrivate + "/32", inetMetadata + "/32", inetAPI + "/32"} {
		mustRun(t, "ip", "-n", in.ns, "addr", "add", a, "dev", "lo")
	}
	in.serve(t)
	return in
}

// serve starts the DNS server, HTTP and HTTPS servers saying who they are,
// and a UDP echo, all inside the internet namespace.
func (in *internet) serve(t *testing.T) {
	t.Helper()
	var udp net.PacketConn
	var tcpDNS net.Listener
	var errs []error
	listeners := map[string]net.Listener{}
	var echo net.PacketConn
	inNetns(t, in.ns, func() {
		var err error
		if udp, err = net.ListenPacket("udp", inetDNS+":53"); err != nil {
			errs = append(errs, err)
		}
		if tcpDNS, err = net.Listen("tcp", inetDNS+":53"); err != nil {
			errs = append(errs, err)
		}
		for _, a := range []string{inetAllowed + ":80", inetAllowed + ":443", inetOther + ":80", inetOther + ":443", inetPrivate + ":80", inetMetadata + ":80", inetAPI + ":80", inetAPI + ":443"} {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			listeners[a] = ln
		}
		if echo, err = net.ListenPacket("udp", inetAllowed+":7"); err != nil {
			errs = append(errs, err)
		}
	})
	if len(errs) > 0 {
		t.Fatalf("internet: %v", errs)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		in.mu.Lock()
		in.queries = append(in.queries, q.Name)
		in.mu.Unlock()
		if ip, ok := testZone[strings.ToLower(q.Name)]; ok {
			if q.Qtype == dns.TypeA {
				rr, _ := dns.NewRR(fmt.Sprintf("%s 30 IN A %s", q.Name, ip))
				m.Answer = append(m.Answer, rr)
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: udp, Handler: mux}, {Listener: tcpDNS, Handler: mux}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	cert := in.ca.leaf(t, "allowed.test", "api.test", "other.test")
	for addr, ln := range listeners {
		who := addr
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s host %s\n", who, r.Host) })
		if strings.HasPrefix(addr, inetAPI+":") {
			h = func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				in.mu.Lock()
				in.requests = append(in.requests, seenRequest{TLS: r.TLS != nil, Host: r.Host, Authorization: r.Header.Get("Authorization"), Body: string(body)})
				in.mu.Unlock()
				fmt.Fprintf(w, "api ok\n") // never echoes what it got: that would hand the value to the sandbox
			}
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		if strings.HasSuffix(addr, ":443") {
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { echo.Close() })
}

// listenCounting accepts TCP connections on addr inside ns and counts them:
// a service of msbd's host that sandboxes must not reach.
func listenCounting(t *testing.T, ns, addr string) *atomic.Int32 {
	t.Helper()
	var ln net.Listener
	var err error
	inNetns(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte("host service\n"))
			c.Close()
		}
	}()
	return &n
}

// testCA is the internet's certificate authority; msbd trusts it through
// --upstream-ca, as an operator would a private CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Path is its certificate, PEM, for msbd --upstream-ca.
	Path string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "msb e2e internet CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), "internet-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, Path: path}
}

// leaf is a server certificate for names, signed by the CA.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
