package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
)

// hostLog remembers the Host of every request an upstream served.
type hostLog struct {
	mu    sync.Mutex
	hosts []string
}

func (h *hostLog) add(s string) { h.mu.Lock(); h.hosts = append(h.hosts, s); h.mu.Unlock() }
func (h *hostLog) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hosts...)
}

var upstreamHosts = map[netip.AddrPort]*hostLog{}
var upstreamHostsMu sync.Mutex

// httpUpstream is a loopback HTTP server: it echoes request bodies,
// answers "host=HOST" otherwise, and upgrades "Upgrade: echo" requests to a
// raw echo.
func httpUpstream(t testing.TB) netip.AddrPort {
	t.Helper()
	log := &hostLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r.Host)
		switch {
		case r.Header.Get("Upgrade") == "echo" && r.URL.Path == "/upgrade":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
			brw.Flush()
			io.Copy(c, brw)
		case r.URL.Path == "/big":
			w.Header().Set("Content-Length", fmt.Sprint(bigSize))
			io.CopyN(w, zeros{}, bigSize)
		case r.Method == "POST":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		default:
			io.WriteString(w, "host="+r.Host)
		}
	}))
	t.Cleanup(srv.Close)
	ap := addrPort(t, srv.Listener.Addr())
	upstreamHostsMu.Lock()
	upstreamHosts[ap] = log
	upstreamHostsMu.Unlock()
	return ap
}

func hostsSeen(ap netip.AddrPort) []string {
	upstreamHostsMu.Lock()
	defer upstreamHostsMu.Unlock()
	return upstreamHosts[ap].get()
}

// clientVia is an http.Client whose every connection goes to the proxy.
func clientVia(addr string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}}
}

func TestHTTPAllowed(t *testing.T) {
	up := httpUpstream(t)
	f := newFake()
	f.allowName("web.msb.test", up)
	_, addr := startProxy(t, f, &up, nil)
	cl := clientVia(addr)
	defer cl.CloseIdleConnections()
	for i := 0; i < 3; i++ { // kept alive: the same connection is reused
		resp, err := cl.Get("http://web.msb.test/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "host=web.msb.test" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	}
	// Bodies, both framings, and a Expect: 100-continue upload.
	payload := strings.Repeat("0123456789", 100000)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // unknown length: Go sends chunked
		}
		req, _ := http.NewRequest("POST", "http://web.msb.test/echo", body)
		req.Header.Set("Expect", "100-continue")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != payload {
			t.Fatalf("chunked=%v: echoed %d bytes, want %d", chunked, len(b), len(payload))
		}
	}
	var n int
	for _, d := range f.decisions() {
		if !d.Allowed {
			t.Fatalf("refusal %+v", d)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%d decisions for one kept-alive connection, want 1", n)
	}
}

// exchange writes raw to a fresh proxied connection and returns every
// response read until the proxy or upstream closes it.
func exchange(t *testing.T, addr, raw string, want int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var out []*http.Response
	for len(out) < want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", len(out)+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
	if b, err := io.ReadAll(br); len(b) != 0 || err != nil {
		t.Fatalf("after %d responses: %q, %v; want the connection closed", want, b, err)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

// TestHTTPSecondHostRefused: a second request naming another host on the
// same connection is refused with a 403 and never reaches the upstream,
// whether it comes after the first response or pipelined with it.
func TestHTTPSecondHostRefused(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		up := httpUpstream(t)
		f := newFake()
		f.allowName("web.msb.test", up)
		_, addr := startProxy(t, f, &up, nil)
		first := "GET /1 HTTP/1.1\r\nHost: web.msb.test\r\n\r\n"
		second := "GET /2 HTTP/1.1\r\nHost: evil.msb.test\r\n\r\n"
		var rs []*http.Response
		if pipelined {
			rs = exchange(t, addr, first+second, 2)
		} else {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, first)
			r1, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b1, _ := io.ReadAll(r1.Body)
			r1.Body = io.NopCloser(strings.NewReader(string(b1)))
			io.WriteString(c, second)
			r2, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			rs = []*http.Response{r1, r2}
			c.Close()
		}
		if rs[0].StatusCode != 200 || body(rs[0]) != "host=web.msb.test" {
			t.Fatalf("first: %d", rs[0].StatusCode)
		}
		if b := body(rs[1]); rs[1].StatusCode != 403 || !strings.Contains(b, "evil.msb.test") || !strings.Contains(b, "no policy allows") {
			t.Fatalf("second: %d %q", rs[1].StatusCode, b)
		}
		if h := hostsSeen(up); len(h) != 1 || h[0] != "web.msb.test" {
			t.Fatalf("upstream saw %q", h)
		}
		f.waitDecision(t, func(d netpolicy.Decision) bool { return d.Name == "evil.msb.test" && !d.Allowed })
	}
}

// TestHTTPMalformed: requests the upstream might read differently from
// the proxy are refused before anything is forwarded.
func TestHTTPMalformed(t *testing.T) {
	up := httpUpstream(t)
	f := newFake()
	f.allowName("web.msb.test", up)
	f.allowName("other.msb.test", up)
	_, addr := startProxy(t, f, &up, nil)
	for _, raw := range []string{
		// Content-Length and Transfer-Encoding: the classic smuggling pair.
		"POST / HTTP/1.1\r\nHost: web.msb.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://evil.msb.test/ HTTP/1.1\r\nHost: web.msb.test\r\n\r\n", // URI and Host disagree
		"GET / HTTP/1.1\r\nHost: web.msb.test\r\nHost: evil.msb.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : web.msb.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web.msb.test\r\n X: folded\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: web.msb.test/x\r\n\r\n",
	} {
		rs := exchange(t, addr, raw, 1)
		if rs[0].StatusCode != 400 {
			t.Fatalf("%q: status %d", raw, rs[0].StatusCode)
		}
	}
	if h := hostsSeen(up); len(h) != 0 {
		t.Fatalf("upstream saw %q", h)
	}
	// A second allowed host on the same connection is admitted, recorded.
	rs := exchange(t, addr, "GET / HTTP/1.1\r\nHost: web.msb.test\r\n\r\n"+
		"GET / HTTP/1.1\r\nHost: OTHER.msb.test.\r\nConnection: close\r\n\r\n", 2)
	if body(rs[1]) != "host=OTHER.msb.test." {
		t.Fatalf("second: %d", rs[1].StatusCode)
	}
	f.waitDecision(t, func(d netpolicy.Decision) bool { return d.Name == "other.msb.test" && d.Allowed })
}

// TestHTTPUpgrade: after a 101 the connection is a tunnel; an upgrade the
// upstream declines leaves the proxy parsing requests, so bytes pipelined
// behind the Upgrade request are still checked.
func TestHTTPUpgrade(t *testing.T) {
	up := httpUpstream(t)
	f := newFake()
	f.allowName("web.msb.test", up)
	_, addr := startProxy(t, f, &up, nil)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: web.msb.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: anything\r\n\r\nnot http at all")
	want := "GET / HTTP/1.1\r\nHost: anything\r\n\r\nnot http at all"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("echo %q, %v", got, err)
	}

	// Declined: the upstream answers 200 and the smuggled request is refused.
	rs := exchange(t, addr, "GET /plain HTTP/1.1\r\nHost: web.msb.test\r\nConnection: Upgrade\r\nUpgrade: nope\r\n\r\n"+
		"GET / HTTP/1.1\r\nHost: evil.msb.test\r\n\r\n", 2)
	if rs[0].StatusCode != 200 || rs[1].StatusCode != 403 {
		t.Fatalf("statuses %d %d", rs[0].StatusCode, rs[1].StatusCode)
	}
}
