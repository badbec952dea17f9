package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// The secret-injection harness: an HTTPS upstream on loopback for
// api.msb.test with its own test CA (the proxy's UpstreamRoots), a Set with
// three bindings, and a proxy with msbd's CA.
var (
	phKey   = secretinject.Placeholder("sb-1", "default", "llm", "apiKey")  // headers+basic to api.msb.test
	phBody  = secretinject.Placeholder("sb-1", "default", "hook", "token")  // everywhere to api.msb.test
	phOther = secretinject.Placeholder("sb-1", "default", "other", "token") // only to other.msb.test
)

const (
	valKey   = "sk-live-VALUE-ONE"
	valBody  = "tok-VALUE-TWO"
	valOther = "other-VALUE-THREE"
)

func testSet(t testing.TB, keyValue string) *secretinject.Set {
	t.Helper()
	s, err := secretinject.NewSet([]secretinject.Binding{
		{Placeholder: phKey, Value: []byte(keyValue), Secret: "default/llm", Key: "apiKey", AllowedHosts: []string{"api.msb.test"}},
		{Placeholder: phBody, Value: []byte(valBody), Secret: "default/hook", Key: "token", AllowedHosts: []string{"api.msb.test"},
			In: secretinject.Headers | secretinject.BasicAuth | secretinject.Query | secretinject.Body},
		{Placeholder: phOther, Value: []byte(valOther), Secret: "default/other", Key: "token", AllowedHosts: []string{"other.msb.test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// seen is one request as the upstream received it.
type seen struct {
	proto, host, uri, auth, apiKey string
	user, pass                     string
	body                           string
	bodyErr                        error
	trailer                        http.Header
}

// secretUpstream is the HTTPS upstream: it echoes what it saw.
type secretUpstream struct {
	ap    netip.AddrPort
	mu    sync.Mutex
	reqs  []seen
	conns atomic.Int32 // TCP connections accepted
}

func (u *secretUpstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

func startSecretUpstream(t testing.TB, pki testPKI) *secretUpstream {
	t.Helper()
	u := &secretUpstream{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := seen{proto: r.Proto, host: r.Host, uri: r.RequestURI, auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("X-Api-Key")}
			s.user, s.pass, _ = r.BasicAuth()
			b, err := io.ReadAll(r.Body)
			s.body, s.bodyErr, s.trailer = string(b), err, r.Trailer
			u.mu.Lock()
			u.reqs = append(u.reqs, s)
			u.mu.Unlock()
			if err != nil {
				return
			}
			w.Header().Set("Trailer", "X-Up-Trailer")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "auth="+s.auth+" body="+s.body)
			w.Header().Set("X-Up-Trailer", "done")
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				u.conns.Add(1)
			}
		},
		ErrorLog: errorLog,
	}
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pki.leaf}, NextProtos: []string{"h2", "http/1.1"}})
	go srv.Serve(tl)
	t.Cleanup(func() { srv.Close() })
	u.ap = addrPort(t, ln.Addr())
	return u
}

// secretEnv is one proxy with Secrets in front of one upstream.
type secretEnv struct {
	f     *fakeDecider
	up    *secretUpstream
	proxy *Proxy
	addr  string
	ca    *secretinject.CA
	pool  *x509.CertPool // trusts msbd's CA: what a sandbox trusts
	// upPool trusts the upstream's test CA: a client of a passthrough
	// connection sees the upstream's own certificate.
	upPool *x509.CertPool
	set    atomic.Pointer[secretinject.Set]

	mu    sync.Mutex
	leaks []*secretinject.Leak
}

func newSecretEnv(t testing.TB, tweak func(*Options)) *secretEnv {
	t.Helper()
	pki := newPKI(t, "api.msb.test", "other.msb.test", "pass.msb.test", "*.cold.msb.test")
	e := &secretEnv{f: newFake(), up: startSecretUpstream(t, pki), upPool: pki.pool}
	e.f.allowName("api.msb.test", e.up.ap)
	e.set.Store(testSet(t, valKey))
	ca, err := secretinject.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.ca = ca
	e.pool = x509.NewCertPool()
	e.pool.AddCert(ca.Certificate())
	dst := e.up.ap
	e.proxy, e.addr = startProxy(t, e.f, &dst, func(o *Options) {
		o.Secrets = func(id string) *secretinject.Set {
			if id != "sb-1" {
				return nil
			}
			return e.set.Load()
		}
		o.CA = ca
		o.UpstreamRoots = pki.pool
		o.OnLeak = func(sb netpolicy.Sandbox, l *secretinject.Leak, dst netip.AddrPort) {
			if sb.ID != "sb-1" || dst != e.up.ap {
				t.Errorf("OnLeak(%s, %v, %s)", sb.ID, l, dst)
			}
			e.mu.Lock()
			e.leaks = append(e.leaks, l)
			e.mu.Unlock()
		}
		if tweak != nil {
			tweak(o)
		}
	})
	return e
}

func (e *secretEnv) leaked() []*secretinject.Leak {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*secretinject.Leak(nil), e.leaks...)
}

// client is a sandbox's HTTPS client: it trusts msbd's CA and connects
// to whatever it asks for through the proxy. h2 off: HTTP/1.1 only.
func (e *secretEnv) client(h2 bool) *http.Client {
	return e.clientWith(h2, true, e.pool)
}

func (e *secretEnv) clientWith(h2, keepAlive bool, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", e.addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return c
}
