package proxy

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// rawUpstream records every byte it receives and answers nothing.
type rawUpstream struct {
	ap netip.AddrPort
	mu sync.Mutex
	b  []byte
	wg sync.WaitGroup
}

func (u *rawUpstream) bytes() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]byte(nil), u.b...)
}

func startRawUpstream(t *testing.T) *rawUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ap: addrPort(t, ln.Addr())}
	var conns []net.Conn
	var cmu sync.Mutex
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					u.mu.Lock()
					u.b = append(u.b, buf[:n]...)
					u.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		u.wg.Wait()
	})
	return u
}

func plainSecretProxy(t *testing.T, f *fakeDecider, dst netip.AddrPort) (string, *[]*secretinject.Leak, *sync.Mutex) {
	var mu sync.Mutex
	var leaks []*secretinject.Leak
	set := testSet(t, valKey)
	_, addr := startProxy(t, f, &dst, func(o *Options) {
		o.Secrets = func(string) *secretinject.Set { return set }
		o.OnLeak = func(_ netpolicy.Sandbox, l *secretinject.Leak, _ netip.AddrPort) {
			mu.Lock()
			leaks = append(leaks, l)
			mu.Unlock()
		}
	})
	return addr, &leaks, &mu
}

// TestPlainHTTPLeaks: on plain HTTP every placeholder is a leak, even one
// whose Secret allows the host: head and small bodies are refused with 403
// before a byte reaches the upstream.
func TestPlainHTTPLeaks(t *testing.T) {
	up := startRawUpstream(t)
	f := newFake()
	f.allowName("api.msb.test", up.ap)
	addr, leaks, mu := plainSecretProxy(t, f, up.ap)
	b64 := base64.StdEncoding.EncodeToString([]byte("x" + phKey))
	body := func(s string) string {
		return "POST / HTTP/1.1\r\nHost: api.msb.test\r\nContent-Length: " + itoa(len(s)) + "\r\n\r\n" + s
	}
	cases := map[string]string{
		"bearer":      "GET / HTTP/1.1\r\nHost: api.msb.test\r\nAuthorization: Bearer " + phKey + "\r\n\r\n",
		"query":       "GET /?k=" + phOther + " HTTP/1.1\r\nHost: api.msb.test\r\n\r\n",
		"basic":       "GET / HTTP/1.1\r\nHost: api.msb.test\r\nAuthorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+phKey)) + "\r\n\r\n",
		"body":        body(`{"key":"` + phBody + `"}`),
		"body base64": body(b64),
		"body pct":    body("k=" + pctEncode(phKey)),
	}
	for name, raw := range cases {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if resp.StatusCode != 403 {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
		c.Close()
	}
	if b := up.bytes(); len(b) != 0 {
		t.Errorf("upstream got %d bytes: %q", len(b), b)
	}
	mu.Lock()
	if len(*leaks) != len(cases) {
		t.Errorf("OnLeak %d times, want %d", len(*leaks), len(cases))
	}
	mu.Unlock()
	f.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.HasPrefix(d.Reason, "secret leak blocked: default/llm/apiKey in plain HTTP request")
	})
}

// TestPlainHTTPChunkedLeak: a placeholder split across chunks of a
// streamed body is still caught; the upstream has the head and part of the
// body, never a byte of the placeholder, and the connection is reset.
func TestPlainHTTPChunkedLeak(t *testing.T) {
	up := startRawUpstream(t)
	f := newFake()
	f.allowName("api.msb.test", up.ap)
	addr, leaks, mu := plainSecretProxy(t, f, up.ap)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pre := strings.Repeat("a", 40<<10)
	raw := "POST / HTTP/1.1\r\nHost: api.msb.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
		chunk(pre) + chunk(phKey[:10]) + chunk(phKey[10:]) + chunk("tail") + "0\r\n\r\n"
	io.WriteString(c, raw)
	readAllBounded(c)
	b := string(up.bytes())
	if strings.Contains(b, phKey[:10]) || strings.Contains(b, phKey[10:]) || strings.Contains(b, "tail") {
		t.Errorf("upstream got placeholder bytes")
	}
	f.waitDecision(t, func(d netpolicy.Decision) bool {
		return strings.HasPrefix(d.Reason, "secret leak blocked: default/llm/apiKey in plain HTTP body")
	})
	mu.Lock()
	if len(*leaks) != 1 {
		t.Errorf("OnLeak %d times", len(*leaks))
	}
	mu.Unlock()
}

// TestPlainHTTPCleanBodies: with Secrets, clean bodies still arrive intact
// (small and large Content-Length, chunked re-framed).
func TestPlainHTTPCleanBodies(t *testing.T) {
	up := httpUpstream(t)
	f := newFake()
	f.allowName("web.msb.test", up)
	addr, _, _ := plainSecretProxy(t, f, up)
	c := clientVia(addr)
	for _, n := range []int{10, 100 << 10} {
		want := strings.Repeat("z", n)
		for _, chunked := range []bool{false, true} {
			var r io.Reader = strings.NewReader(want)
			if chunked {
				r = io.MultiReader(r)
			}
			resp, err := c.Post("http://web.msb.test/", "text/plain", r)
			if err != nil {
				t.Fatal(err)
			}
			if got := body(resp); got != want {
				t.Errorf("n=%d chunked=%v: got %d bytes", n, chunked, len(got))
			}
			resp.Body.Close()
		}
	}
}

func chunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

func itoa(n int) string { return strconv.Itoa(n) }
