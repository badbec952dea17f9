package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
)

// These tests run the real Engine: connections admitted before a policy is
// removed or narrowed must not stay useful, and a resync that sets the same
// rules again must not disturb them.
//
// The Engine never admits a loopback destination, so the proxy is told the
// sandbox meant a public stand-in (TEST-NET-3) and its Dial sends that to
// the loopback upstream: no packet goes anywhere but loopback.

var standIn = netip.MustParseAddr("203.0.113.10")

// recEngine is the Engine with its recorded decisions kept for the test.
// Embedding keeps every optional interface (RulesWatcher, Rechecker,
// PinChecker) the proxy looks for.
type recEngine struct {
	*netpolicy.Engine
	mu   sync.Mutex
	recs []netpolicy.Decision
}

func (r *recEngine) Record(d netpolicy.Decision) {
	r.mu.Lock()
	r.recs = append(r.recs, d)
	r.mu.Unlock()
	r.Engine.Record(d)
}

func (r *recEngine) waitDecision(t *testing.T, ok func(netpolicy.Decision) bool) netpolicy.Decision {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		for _, d := range r.recs {
			if ok(d) {
				r.mu.Unlock()
				return d
			}
		}
		r.mu.Unlock()
	}
	t.Fatalf("no matching decision among %+v", r.recs)
	return netpolicy.Decision{}
}

const sbID = "sb-1"

var sbAddr = netip.MustParseAddr("127.0.0.1")

// engineProxy starts a proxy deciding with a real Engine for one sandbox at
// 127.0.0.1 with rules, whose connections all "meant" standIn:port and are
// dialled to up. name is pinned to standIn, as the DNS filter would.
func engineProxy(t *testing.T, up netip.AddrPort, port uint16, name string, rules ...netpolicy.Rule) (*recEngine, *Proxy, string) {
	t.Helper()
	e := &recEngine{Engine: netpolicy.NewEngine(netpolicy.EngineOptions{})}
	setRules(e, rules...)
	e.Pin(sbAddr, name, standIn, time.Hour)
	dst := netip.AddrPortFrom(standIn, port)
	p, addr := startProxy(t, e, &dst, func(o *Options) {
		o.Dial = func(ctx context.Context, network, a string) (net.Conn, error) {
			if a != dst.String() {
				return nil, fmt.Errorf("test dials only %s, not %s", dst, a)
			}
			return (&net.Dialer{}).DialContext(ctx, network, up.String())
		}
	})
	return e, p, addr
}

func setRules(e *recEngine, rules ...netpolicy.Rule) {
	e.SetSandbox(netpolicy.Sandbox{ID: sbID, Namespace: "default", Name: "one", IP: sbAddr, Rules: rules})
}

// watchedConn waits (bounded) for the proxy to hold exactly one watched
// connection in the state ok wants, and returns it.
func watchedConn(t *testing.T, p *Proxy, what string, ok func(w *watchState) bool) *conn {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		p.wmu.Lock()
		var x *conn
		for c := range p.watched {
			x = c
		}
		n := len(p.watched)
		p.wmu.Unlock()
		if n == 1 {
			x.w.mu.Lock()
			good := ok(&x.w)
			x.w.mu.Unlock()
			if good {
				return x
			}
		}
	}
	t.Fatalf("no watched connection %s", what)
	return nil
}

func isIdle(w *watchState) bool { return !w.busy }

// getOn sends a GET for host on the kept-alive c and reads the response.
func getOn(t *testing.T, c net.Conn, br *bufio.Reader, host string) (*http.Response, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestHTTPKeepAliveRulesChange(t *testing.T) {
	web := netpolicy.Rule{Policy: "default/web", Domain: "allowed.test", Ports: []uint16{80}}
	other := netpolicy.Rule{Policy: "default/other", Domain: "other.test"}
	for _, tc := range []struct {
		name    string
		rules   []netpolicy.Rule // set after request 1
		allowed bool             // request 2 is answered
	}{
		{"same rules, other order", []netpolicy.Rule{other, web}, true},
		{"changed, still allowed", []netpolicy.Rule{web, other, {Policy: "default/x", Domain: "x.test"}}, true},
		{"policy removed", []netpolicy.Rule{other}, false},
		{"narrowed to another port", []netpolicy.Rule{other, {Policy: "default/web", Domain: "allowed.test", Ports: []uint16{8080}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := httpUpstream(t)
			e, p, addr := engineProxy(t, up, 80, "allowed.test", web, other)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if resp, body := getOn(t, c, br, "allowed.test"); resp.StatusCode != 200 || body != "host=allowed.test" {
				t.Fatalf("request 1: %d %q", resp.StatusCode, body)
			}
			// The relay is waiting for request 2 (so the outcome is the
			// relay's own 403, not the watcher cutting a busy
			// connection): now the rules change, or are set again.
			watchedConn(t, p, "waiting for request 2", isIdle)
			gen := e.Generation(sbID)
			setRules(e, tc.rules...)
			if same := e.Generation(sbID) == gen; same != (tc.name == "same rules, other order") {
				t.Fatalf("generation moved: %v", !same)
			}

			resp, body := getOn(t, c, br, "allowed.test")
			if !tc.allowed {
				if resp.StatusCode != 403 || !strings.Contains(body, "policy changed") {
					t.Fatalf("request 2 after the change: %d %q", resp.StatusCode, body)
				}
				if n := len(hostsSeen(up)); n != 1 {
					t.Fatalf("upstream saw %d requests, want 1", n)
				}
				d := e.waitDecision(t, func(d netpolicy.Decision) bool { return !d.Allowed })
				if d.Name != "allowed.test" || d.Sandbox != sbID || !strings.HasPrefix(d.Reason, "policy changed: ") {
					t.Fatalf("decision %+v", d)
				}
				if _, err := br.ReadByte(); err == nil {
					t.Fatal("connection still open after the 403")
				}
				return
			}
			if resp.StatusCode != 200 || body != "host=allowed.test" {
				t.Fatalf("request 2: %d %q", resp.StatusCode, body)
			}
			if n := len(hostsSeen(up)); n != 2 {
				t.Fatalf("upstream saw %d requests, want 2", n)
			}
		})
	}
}

// A WebSocket-like tunnel out of the HTTP relay is cut once the rules stop
// allowing the host it was opened for.
func TestHTTPTunnelRulesChange(t *testing.T) {
	up := httpUpstream(t)
	web := netpolicy.Rule{Policy: "default/web", Domain: "allowed.test"}
	e, _, addr := engineProxy(t, up, 80, "allowed.test", web)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	echo(t, c, br, "ping")
	setRules(e)
	if _, err := readAllBounded(c); isTimeout(err) {
		t.Fatalf("tunnel still open after the policy was removed: %v", err)
	}
	e.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && d.Name == "allowed.test" && strings.HasPrefix(d.Reason, "policy changed: ")
	})
}

func echo(t *testing.T, c net.Conn, br *bufio.Reader, s string) {
	t.Helper()
	io.WriteString(c, s)
	got := make([]byte, len(s))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != s {
		t.Fatalf("echo %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A spliced TLS connection is closed (both sides) once the rules stop
// allowing its SNI, and kept while they still do — across a resync with
// the same rules and across a change that still allows it.
func TestTLSSpliceRulesChange(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	tlsRule := netpolicy.Rule{Policy: "default/tls", Domain: "tls.msb.test", Ports: []uint16{443}}
	other := netpolicy.Rule{Policy: "default/other", Domain: "other.test"}
	e, p, addr := engineProxy(t, up, 443, "tls.msb.test", tlsRule, other)

	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(when string) {
		t.Helper()
		resp, body := getOn(t, c, br, "tls.msb.test")
		if resp.StatusCode != 200 || body != "hello from tls.msb.test" {
			t.Fatalf("%s: %d %q", when, resp.StatusCode, body)
		}
	}
	get("request 1")
	x := watchedConn(t, p, "spliced", func(w *watchState) bool { return w.busy && w.name == "tls.msb.test" })

	// A resync with the same rules, in another order: nothing to do.
	gen := e.Generation(sbID)
	setRules(e, other, tlsRule, tlsRule)
	if e.Generation(sbID) != gen {
		t.Fatal("the same rules moved the generation")
	}
	get("request 2, after a resync")

	// A change that still allows it: rechecked (wait for that), kept.
	setRules(e, tlsRule)
	gen = e.Generation(sbID)
	watchedConn(t, p, "rechecked under the new rules", func(w *watchState) bool { return w == &x.w && w.gen == gen })
	get("request 3, after a change that still allows it")

	// The rule is gone: closed.
	setRules(e, other)
	if _, err := readAllBounded(c); isTimeout(err) {
		t.Fatal("spliced connection still open after its policy was removed")
	}
	d := e.waitDecision(t, func(d netpolicy.Decision) bool { return !d.Allowed })
	if d.Name != "tls.msb.test" || d.Sandbox != sbID || d.Addr != standIn || d.Port != 443 || d.Kind != netpolicy.KindTCP ||
		!strings.HasPrefix(d.Reason, "policy changed: ") {
		t.Fatalf("decision %+v", d)
	}
	// Both sides: the proxy forgets the connection (it unregisters only
	// once its copying, hence the upstream side, has ended).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p.wmu.Lock()
		n := len(p.watched)
		p.wmu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy still holds the connection")
		}
	}
}

// Removing the sandbox closes what it had open.
func TestSpliceSandboxRemoved(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	e, _, addr := engineProxy(t, up, 443, "tls.msb.test", netpolicy.Rule{Domain: "tls.msb.test"})
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	getOn(t, c, br, "tls.msb.test")
	e.RemoveSandbox(sbID)
	if _, err := readAllBounded(c); isTimeout(err) {
		t.Fatal("spliced connection still open after its sandbox was removed")
	}
	e.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.HasPrefix(d.Reason, "policy changed: ")
	})
}
