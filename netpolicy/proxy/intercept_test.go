package proxy

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// TestInterceptSubstitutes: bearer header, X-Api-Key and basic auth reach
// the upstream with the real value, over HTTP/2 and over HTTP/1.1
// keep-alive; the sandbox sees a leaf signed by msbd's CA; trailers pass
// both ways.
func TestInterceptSubstitutes(t *testing.T) {
	e := newSecretEnv(t, nil)
	for _, h2 := range []bool{true, false} {
		c := e.client(h2)
		for i := range 3 {
			req, _ := http.NewRequest("GET", "https://api.msb.test/v1/models?x=1", nil)
			req.Header.Set("Authorization", "Bearer "+phKey)
			req.Header.Set("X-Api-Key", phBody)
			resp, body := do(t, c, req)
			if resp.StatusCode != 200 || body != "auth=Bearer "+valKey+" body=" {
				t.Fatalf("h2=%v #%d: %d %q", h2, i, resp.StatusCode, body)
			}
			if want := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != want {
				t.Errorf("sandbox spoke HTTP/%d, want %d", resp.ProtoMajor, want)
			}
			if iss := resp.TLS.PeerCertificates[0].Issuer.CommonName; iss != e.ca.Certificate().Subject.CommonName {
				t.Errorf("leaf issued by %q", iss)
			}
			if resp.Trailer.Get("X-Up-Trailer") != "done" {
				t.Errorf("response trailer %v", resp.Trailer)
			}
			req, _ = http.NewRequest("GET", "https://api.msb.test/basic", nil)
			req.SetBasicAuth("user", phKey)
			do(t, c, req)
		}
		c.CloseIdleConnections()
	}
	reqs := e.up.requests()
	if len(reqs) != 12 {
		t.Fatalf("upstream saw %d requests, want 12", len(reqs))
	}
	for i, r := range reqs {
		if i%2 == 0 && (r.auth != "Bearer "+valKey || r.apiKey != valBody || r.uri != "/v1/models?x=1") {
			t.Errorf("request %d: %+v", i, r)
		}
		if i%2 == 1 && (r.user != "user" || r.pass != valKey) {
			t.Errorf("basic auth %d: %+v", i, r)
		}
		if r.host != "api.msb.test" {
			t.Errorf("Host %q", r.host)
		}
	}
	// Keep-alive: each client used one connection to the proxy, and the
	// proxy one to the upstream per sandbox connection.
	if n := e.up.conns.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2 (one per client)", n)
	}
	if l := e.leaked(); len(l) != 0 {
		t.Errorf("leaks %v", l)
	}
}

// TestInterceptStreamingBody: a body of unknown length (chunked, fed by a
// pipe) with a placeholder whose Secret allows Body is substituted as it
// streams, and request trailers arrive.
func TestInterceptStreamingBody(t *testing.T) {
	e := newSecretEnv(t, nil)
	for _, h2 := range []bool{false, true} {
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, strings.Repeat("a", 50<<10)+" token="+phBody+" ")
			io.WriteString(pw, strings.Repeat("b", 70<<10))
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", "https://api.msb.test/upload", pr)
		req.Trailer = http.Header{"X-Sum": {"42"}}
		resp, body := do(t, e.client(h2), req)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		want := strings.Repeat("a", 50<<10) + " token=" + valBody + " " + strings.Repeat("b", 70<<10)
		if !strings.HasSuffix(body, want) {
			t.Errorf("h2=%v: body not substituted (%d bytes)", h2, len(body))
		}
	}
	for _, r := range e.up.requests() {
		if r.trailer.Get("X-Sum") != "42" {
			t.Errorf("%s request trailer %v", r.proto, r.trailer)
		}
	}
}

// TestInterceptRotation: a new Set returned by Secrets applies to the next
// request on the same connection.
func TestInterceptRotation(t *testing.T) {
	e := newSecretEnv(t, nil)
	c := e.client(false)
	for _, v := range []string{valKey, "sk-ROTATED", "sk-ROTATED-AGAIN"} {
		e.set.Store(testSet(t, v))
		req, _ := http.NewRequest("GET", "https://api.msb.test/", nil)
		req.Header.Set("Authorization", "Bearer "+phKey)
		if _, body := do(t, c, req); body != "auth=Bearer "+v+" body=" {
			t.Errorf("after rotation to %s: %q", v, body)
		}
	}
	if n := e.up.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

// TestInterceptHostMismatch: a request whose Host is not the SNI is
// refused and the upstream gets nothing.
func TestInterceptHostMismatch(t *testing.T) {
	e := newSecretEnv(t, nil)
	for _, h2 := range []bool{false, true} {
		req, _ := http.NewRequest("GET", "https://api.msb.test/", nil)
		req.Host = "other.msb.test"
		req.Header.Set("Authorization", "Bearer "+phOther)
		resp, err := e.client(h2).Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("h2=%v: %d %q", h2, resp.StatusCode, b)
			}
		}
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
	// The placeholder was on its way to other.msb.test, which its Secret
	// allows; what refused it is the mismatch.
	e.f.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.Contains(d.Reason, "does not match SNI")
	})
}

// TestInterceptLeaks: every form of a placeholder whose Secret does not
// allow the host (or this location) is blocked on the intercepted
// connection before any request reaches the upstream.
func TestInterceptLeaks(t *testing.T) {
	e := newSecretEnv(t, nil)
	b64 := base64.StdEncoding.EncodeToString([]byte(`{"k":"` + phOther + `"}`))
	cases := map[string]func(r *http.Request){
		"header":                           func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+phOther) },
		"basic auth":                       func(r *http.Request) { r.SetBasicAuth(phOther, "x") },
		"query":                            func(r *http.Request) { r.URL.RawQuery = "key=" + phOther },
		"query (not allowed for this key)": func(r *http.Request) { r.URL.RawQuery = "key=" + phKey },
		"path":                             func(r *http.Request) { r.URL.Path = "/" + phKey },
		"header name":                      func(r *http.Request) { r.Header.Set("X-"+phKey, "1") },
		"body base64":                      func(r *http.Request) { setBody(r, b64) },
		"body pct":                         func(r *http.Request) { setBody(r, "a="+pctEncode(phOther)) },
		"body (key)":                       func(r *http.Request) { setBody(r, "key="+phKey) },
	}
	for name, mod := range cases {
		for _, h2 := range []bool{false, true} {
			req, _ := http.NewRequest("POST", "https://api.msb.test/", nil)
			mod(req)
			resp, err := e.client(h2).Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 403 {
					t.Errorf("%s h2=%v: status %d", name, h2, resp.StatusCode)
				}
			}
		}
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests: %+v", n, e.up.requests())
	}
	if n := len(e.leaked()); n != 2*len(cases) {
		t.Errorf("OnLeak called %d times, want %d", n, 2*len(cases))
	}
	for _, d := range e.f.decisions() {
		for _, v := range []string{valKey, valBody, valOther} {
			if strings.Contains(d.Reason, v) {
				t.Errorf("decision holds a value: %+v", d)
			}
		}
	}
	e.f.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.HasPrefix(d.Reason, "secret leak blocked: default/other/token in header Authorization")
	})
}

// TestInterceptStreamedLeak: a placeholder far down a streamed body (the
// head is already upstream) resets the request: the upstream never gets a
// complete body, nor any byte of the placeholder.
func TestInterceptStreamedLeak(t *testing.T) {
	e := newSecretEnv(t, nil)
	for _, h2 := range []bool{false, true} {
		pr, pw := io.Pipe()
		go func() {
			io.WriteString(pw, strings.Repeat("a", 100<<10))
			io.WriteString(pw, phOther)
			io.WriteString(pw, strings.Repeat("b", 10<<10))
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", "https://api.msb.test/upload", pr)
		if resp, err := e.client(h2).Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("h2=%v: got a response %d %q", h2, resp.StatusCode, b)
		}
		pr.Close()
	}
	for _, r := range e.up.requests() {
		if r.bodyErr == nil {
			t.Errorf("upstream got a complete request: %d bytes", len(r.body))
		}
		if strings.Contains(r.body, "msb-placeholder") || strings.Contains(r.body, valOther) {
			t.Errorf("upstream got placeholder bytes")
		}
	}
	e.f.waitDecision(t, func(d netpolicy.Decision) bool {
		return strings.HasPrefix(d.Reason, "secret leak blocked: default/other/token in body")
	})
}

// TestInterceptUntrustedUpstream: an upstream whose certificate does not
// verify against UpstreamRoots fails the sandbox's connection and gets no
// request.
func TestInterceptUntrustedUpstream(t *testing.T) {
	other := newPKI(t, "api.msb.test")
	e := newSecretEnv(t, func(o *Options) { o.UpstreamRoots = other.pool })
	req, _ := http.NewRequest("GET", "https://api.msb.test/", nil)
	req.Header.Set("Authorization", "Bearer "+phKey)
	if resp, err := e.client(false).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request succeeded: %d", resp.StatusCode)
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
	e.f.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.Contains(d.Reason, "upstream TLS failed")
	})
}

// TestInterceptPassthroughOthers: TLS to a host no Secret names stays
// spliced: the sandbox sees the upstream's own certificate.
func TestInterceptPassthroughOthers(t *testing.T) {
	e := newSecretEnv(t, nil)
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	e.f.allowName("tls.msb.test", up)
	dst := up
	_, addr := startProxy(t, e.f, &dst, func(o *Options) {
		o.Secrets = func(string) *secretinject.Set { return e.set.Load() }
		o.CA = e.ca
	})
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	if err != nil {
		t.Fatalf("passthrough handshake: %v", err)
	}
	defer c.Close()
	if iss := c.ConnectionState().PeerCertificates[0].Issuer.CommonName; iss != "msb test CA" {
		t.Errorf("issuer %q", iss)
	}
}

// TestInterceptNeedsPin: a Secret's host on an address only an IP rule
// admits (not pinned to the name) is refused, not intercepted.
func TestInterceptNeedsPin(t *testing.T) {
	e := newSecretEnv(t, nil)
	e.f.allowName("api.msb.test", netip.MustParseAddrPort("127.0.0.1:1"))
	e.f.mu.Lock()
	e.f.ips[e.up.ap] = true
	e.f.mu.Unlock()
	req, _ := http.NewRequest("GET", "https://api.msb.test/", nil)
	if resp, err := e.client(false).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request succeeded: %d", resp.StatusCode)
	}
	e.f.waitDecision(t, func(d netpolicy.Decision) bool {
		return !d.Allowed && strings.Contains(d.Reason, "not one msb's DNS handed out")
	})
	if n := e.up.conns.Load(); n != 0 {
		t.Errorf("upstream dialled %d times", n)
	}
}

// TestInterceptNoGoroutineLeak: Close ends every goroutine interception
// started, with connections open in both protocols.
func TestInterceptNoGoroutineLeak(t *testing.T) {
	e := newSecretEnv(t, nil)
	base := runtime.NumGoroutine()
	var clients []*http.Client
	for _, h2 := range []bool{false, true} {
		c := e.client(h2)
		clients = append(clients, c)
		req, _ := http.NewRequest("GET", "https://api.msb.test/", nil)
		do(t, c, req)
	}
	e.proxy.Close()
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	waitGoroutines(t, base)
}

func setBody(r *http.Request, s string) {
	r.Body = io.NopCloser(strings.NewReader(s))
	r.ContentLength = int64(len(s))
}

func pctEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%" + strings.ToUpper(hexByte(s[i])))
	}
	return b.String()
}

func hexByte(c byte) string {
	const h = "0123456789abcdef"
	return string([]byte{h[c>>4], h[c&15]})
}
