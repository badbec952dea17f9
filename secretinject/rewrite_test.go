package secretinject

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var (
	ph1 = Placeholder("uid-1", "default", "llm", "apiKey")   // headers+basic to api.example.com
	ph2 = Placeholder("uid-1", "default", "gh", "token")     // everywhere to *.github.example
	ph3 = Placeholder("uid-1", "default", "body", "payload") // body only to hooks.example
	v1  = "sk-live-VALUEONE"
	v2  = "ghp_VALUE/TWO+&="
	v3  = `{"v":"VALUETHREE"}`
)

func testSet(t testing.TB) *Set {
	s, err := NewSet([]Binding{
		{Placeholder: ph1, Value: []byte(v1), Secret: "default/llm", Key: "apiKey", AllowedHosts: []string{"API.example.com."}},
		{Placeholder: ph2, Value: []byte(v2), Secret: "default/gh", Key: "token", AllowedHosts: []string{"*.github.example"}, In: Headers | BasicAuth | Query | Body},
		{Placeholder: ph3, Value: []byte(v3), Secret: "default/body", Key: "payload", AllowedHosts: []string{"hooks.example"}, In: Body},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

type reqSpec struct {
	method, url string
	hdr         map[string]string
	body        string
	chunked     bool // unknown length
}

func (r reqSpec) build() *http.Request {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	method := r.method
	if method == "" {
		method = "GET"
	}
	req, err := http.NewRequest(method, r.url, body)
	if err != nil {
		panic(err)
	}
	if r.chunked {
		req.ContentLength = -1
	}
	for k, v := range r.hdr {
		req.Header.Set(k, v)
	}
	return req
}

func TestRewrite(t *testing.T) {
	s := testSet(t)
	for _, tc := range []struct {
		name  string
		req   reqSpec
		host  string // default: the URL's host
		leak  string // want a leak whose Where contains this ("-" for ErrHostMismatch)
		check func(t *testing.T, r *http.Request, body string)
	}{
		{name: "bearer", req: reqSpec{url: "https://api.example.com/v1", hdr: map[string]string{"Authorization": "Bearer " + ph1}},
			check: wantHeader("Authorization", "Bearer "+v1)},
		{name: "custom header, host case and dot", req: reqSpec{url: "https://api.example.com/v1", hdr: map[string]string{"X-Api-Key": ph1}}, host: "Api.Example.COM.",
			check: wantHeader("X-Api-Key", v1)},
		{name: "basic password", req: reqSpec{url: "https://api.example.com/", hdr: map[string]string{"Authorization": basic("me", ph1)}},
			check: wantHeader("Authorization", basic("me", v1))},
		{name: "basic user", req: reqSpec{url: "https://x.github.example/", hdr: map[string]string{"Authorization": basic(ph2, "")}},
			check: wantHeader("Authorization", basic(v2, ""))},
		{name: "query substituted, others kept", req: reqSpec{url: "https://x.github.example/p?a=%2f%2F&token=" + ph2 + "&z"},
			check: wantQuery("a=%2f%2F&token=" + url.QueryEscape(v2) + "&z")},
		{name: "query percent-encoded placeholder", req: reqSpec{url: "https://x.github.example/p?t=" + pctAll(ph2)},
			check: wantQuery("t=" + url.QueryEscape(v2))},
		{name: "body with length", req: reqSpec{method: "POST", url: "https://api.github.example/", body: `{"t":"` + ph2 + `"}`},
			check: wantBody(`{"t":"`+v2+`"}`, true)},
		{name: "body chunked", req: reqSpec{method: "POST", url: "https://api.github.example/", body: strings.Repeat("x", 70000) + ph2 + "!", chunked: true},
			check: wantBody(strings.Repeat("x", 70000)+v2+"!", false)},
		{name: "body only binding", req: reqSpec{method: "POST", url: "https://hooks.example/", body: ph3},
			check: wantBody(v3, true)},
		{name: "encoded placeholder to its host is left alone", req: reqSpec{url: "https://api.example.com/", hdr: map[string]string{"X-B64": base64.StdEncoding.EncodeToString([]byte(ph1))}},
			check: wantHeader("X-B64", base64.StdEncoding.EncodeToString([]byte(ph1)))},
		{name: "no placeholder", req: reqSpec{method: "POST", url: "https://api.example.com/?q=1", body: "hello"},
			check: wantBody("hello", true)},

		// Leaks: wrong host, wrong location, never-allowed location.
		{name: "other host", req: reqSpec{url: "https://evil.example/", hdr: map[string]string{"Authorization": "Bearer " + ph1}}, leak: "header Authorization"},
		{name: "suffix is not the apex", req: reqSpec{url: "https://github.example/", hdr: map[string]string{"X": ph2}}, leak: "header X"},
		{name: "suffix needs a dot", req: reqSpec{url: "https://evilgithub.example/", hdr: map[string]string{"X": ph2}}, leak: "header X"},
		{name: "query not allowed", req: reqSpec{url: "https://api.example.com/?k=" + ph1}, leak: "query"},
		{name: "body not allowed", req: reqSpec{method: "POST", url: "https://api.example.com/", body: "k=" + ph1}, leak: "body"},
		{name: "body not allowed, chunked", req: reqSpec{method: "POST", url: "https://api.example.com/", body: "k=" + ph1, chunked: true}, leak: "body"},
		{name: "path", req: reqSpec{url: "https://api.example.com/keys/" + ph1}, leak: "url path"},
		{name: "header name", req: reqSpec{url: "https://api.example.com/", hdr: map[string]string{"X-" + ph1: "1"}}, leak: "header name"},
		{name: "headers only, not basic", req: reqSpec{url: "https://hooks.example/", hdr: map[string]string{"Authorization": basic("u", ph3)}}, leak: "basic auth"},
		{name: "basic to other host", req: reqSpec{url: "https://evil.example/", hdr: map[string]string{"Authorization": basic("u", ph1)}}, leak: "basic auth"},
		{name: "second secret rides along", req: reqSpec{url: "https://api.example.com/", hdr: map[string]string{"A": ph1, "B": ph2}}, leak: "header B"},
		{name: "host mismatch", req: reqSpec{url: "https://evil.example/", hdr: map[string]string{"A": ph1}}, host: "api.example.com", leak: "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req.build()
			host := tc.host
			if host == "" {
				host = req.URL.Hostname()
			}
			before := req.Header.Clone()
			err := s.Rewrite(req, host)
			var body []byte
			if err == nil && req.Body != nil {
				body, err = io.ReadAll(req.Body)
			}
			var l *Leak
			switch {
			case tc.leak == "-":
				if !errors.Is(err, ErrHostMismatch) {
					t.Fatalf("err %v, want ErrHostMismatch", err)
				}
			case tc.leak != "":
				if !errors.As(err, &l) || !strings.Contains(l.Where, tc.leak) {
					t.Fatalf("err %v, want a leak in %s", err, tc.leak)
				}
				if l.Host != normHost(host) || l.Secret == "" || l.Key == "" {
					t.Errorf("leak %+v", l)
				}
				for _, v := range []string{v1, v2, v3} {
					if strings.Contains(err.Error(), v) {
						t.Error("the error shows a value")
					}
				}
				if !equalHeader(before, req.Header) {
					t.Error("a refused request was changed")
				}
			case err != nil:
				t.Fatal(err)
			default:
				tc.check(t, req, string(body))
			}
		})
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\n") != strings.Join(b[k], "\n") {
			return false
		}
	}
	return true
}

func wantHeader(name, v string) func(*testing.T, *http.Request, string) {
	return func(t *testing.T, r *http.Request, _ string) {
		if got := r.Header.Get(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
}

func wantQuery(q string) func(*testing.T, *http.Request, string) {
	return func(t *testing.T, r *http.Request, _ string) {
		if r.URL.RawQuery != q {
			t.Errorf("query %q, want %q", r.URL.RawQuery, q)
		}
	}
}

func wantBody(b string, known bool) func(*testing.T, *http.Request, string) {
	return func(t *testing.T, r *http.Request, got string) {
		if got != b {
			t.Errorf("body %.80q…, want %.80q…", got, b)
		}
		if known && r.ContentLength != int64(len(b)) || !known && r.ContentLength != -1 {
			t.Errorf("content length %d for a body of %d", r.ContentLength, len(b))
		}
		if known && r.GetBody != nil {
			rb, _ := r.GetBody()
			if again, _ := io.ReadAll(rb); string(again) != b {
				t.Error("GetBody gives another body")
			}
		}
	}
}

func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[s[i]>>4])) + string("0123456789abcdef"[s[i]&15]))
	}
	return b.String()
}

func TestRewriteRefusesControlCharacters(t *testing.T) {
	s, _ := NewSet([]Binding{{Placeholder: ph1, Value: []byte("a\r\nX-Evil: 1"), Secret: "d/s", Key: "k", AllowedHosts: []string{"h.example"}}})
	req := reqSpec{url: "https://h.example/", hdr: map[string]string{"X": ph1}}.build()
	if err := s.Rewrite(req, "h.example"); err == nil || strings.Contains(err.Error(), "Evil") {
		t.Fatalf("err %v", err)
	}
}

func TestTrailers(t *testing.T) {
	s := testSet(t)
	req := reqSpec{method: "POST", url: "https://evil.example/", body: "data", chunked: true}.build()
	req.Trailer = http.Header{"X-Sig": {ph1}}
	if err := s.Rewrite(req, "evil.example"); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(req.Body)
	var l *Leak
	if !errors.As(err, &l) || !strings.Contains(l.Where, "trailer X-Sig") {
		t.Fatalf("trailer leak: %v", err)
	}
}

// A known-length body above MaxBufferedBody is streamed; a placeholder in
// it is refused before it is read out.
func TestLargeBody(t *testing.T) {
	s := testSet(t)
	big := bytes.Repeat([]byte("a"), MaxBufferedBody+10)
	copy(big[MaxBufferedBody-100:], ph2)
	req, _ := http.NewRequest("POST", "https://api.github.example/", bytes.NewReader(big))
	if err := s.Rewrite(req, "api.github.example"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(req.Body)
	var l *Leak
	if !errors.As(err, &l) || bytes.Contains(got, []byte(ph2[len(PlaceholderPrefix):])) {
		t.Fatalf("err %v, read %d bytes", err, len(got))
	}
	clean := bytes.Repeat([]byte("b"), MaxBufferedBody+10)
	req, _ = http.NewRequest("POST", "https://api.github.example/", bytes.NewReader(clean))
	s.Rewrite(req, "api.github.example")
	if got, err := io.ReadAll(req.Body); err != nil || !bytes.Equal(got, clean) || req.ContentLength != int64(len(clean)) {
		t.Fatalf("clean large body: %v, %d bytes", err, len(got))
	}
}
