package secretinject

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// FuzzRewrite: Rewrite and Leak never panic, and a value only ever appears
// in what would be sent when its binding allows the host (or the sandbox
// sent the value itself, which it cannot know).
func FuzzRewrite(f *testing.F) {
	f.Add("api.example.com", "Bearer "+ph1, "q="+ph2, []byte(ph3), false)
	f.Add("x.github.example", basic(ph2, ph2), "a=%6d"+ph2, []byte(`{"a":"`+ph2+`"}`), true)
	f.Add("evil.example", base64.StdEncoding.EncodeToString([]byte(ph1)), "", []byte(pctAll(ph2)), false)
	f.Add("hooks.example", "", "x", []byte(strings.Repeat(ph3, 3)), true)
	s := testSet(f)
	values := map[string]string{v1: "api.example.com", v2: ".github.example", v3: "hooks.example"}
	f.Fuzz(func(t *testing.T, host, hdr, query string, body []byte, chunked bool) {
		u, err := url.Parse("https://h/p?" + query)
		if err != nil {
			return
		}
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = io.MultiReader(r)
		}
		req, err := http.NewRequest("POST", "https://h/", r)
		if err != nil {
			return
		}
		req.URL = u
		req.Host = host
		req.Header["Authorization"] = []string{hdr}
		req.Header["X-Other"] = []string{hdr}
		in := hdr + query + string(body)
		err = s.Rewrite(req, host)
		var out []byte
		if err == nil {
			out, err = io.ReadAll(req.Body)
		}
		if err != nil {
			return
		}
		sent := fmt.Sprint(req.Header) + req.URL.String() + string(out)
		if d, e := base64.StdEncoding.DecodeString(strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")); e == nil {
			sent += string(d)
		}
		sent, _ = url.QueryUnescape(strings.ReplaceAll(sent, "+", "%2B"))
		h := normHost(host)
		for v, allowed := range values {
			ok := h == allowed || strings.HasPrefix(allowed, ".") && strings.HasSuffix(h, allowed) && len(h) > len(allowed)
			if strings.Contains(sent, v) && !ok && !strings.Contains(in, v) {
				t.Fatalf("value of a binding for %s sent to %q", allowed, host)
			}
		}
		// Leak on a fresh request must not panic either.
		req2, _ := http.NewRequest("GET", "https://h/", bytes.NewReader(body))
		req2.URL, req2.Host = u, host
		req2.Header["X"] = []string{hdr}
		s.Leak(req2, host)
		s.LeakInName(hdr)
		s.LeakInBytes(body)
	})
}

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"%41%u0041\\u0041\\x41\\/&#65;&#x41;", "%", "\\", "&#", "&#x;", "%u12", "&#99999999999;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u := unescape(s)
		if len(u) > 3*len(s)+4 {
			t.Fatalf("unescape grew %d to %d", len(s), len(u))
		}
	})
}

func TestConcurrentRewrite(t *testing.T) {
	s := testSet(t)
	ca := testCA(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca.Leaf(fmt.Sprintf("h%d.github.example", i%8))
			req := reqSpec{method: "POST", url: "https://api.github.example/?t=" + ph2,
				hdr: map[string]string{"Authorization": basic("u", ph2)}, body: "b=" + ph2, chunked: i%2 == 0}.build()
			if err := s.Rewrite(req, "api.github.example"); err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(req.Body)
			if string(b) != "b="+v2 || req.Header.Get("Authorization") != basic("u", v2) {
				errs <- fmt.Errorf("goroutine %d: wrong rewrite", i)
			}
			if s.Leak(reqSpec{url: "https://evil.example/", hdr: map[string]string{"X": ph2}}.build(), "evil.example") == nil {
				errs <- fmt.Errorf("goroutine %d: leak missed", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSets(t *testing.T) {
	var ss Sets
	s := testSet(t)
	ss.Put("sb1", s)
	if ss.Get("sb1") != s || ss.Get("sb2") != nil {
		t.Fatal("Get")
	}
	// Rotation: a new Set with a new value, same placeholder.
	s2, _ := NewSet([]Binding{{Placeholder: ph1, Value: []byte("rotated"), Secret: "default/llm", Key: "apiKey", AllowedHosts: []string{"api.example.com"}}})
	ss.Put("sb1", s2)
	req := reqSpec{url: "https://api.example.com/", hdr: map[string]string{"X": ph1}}.build()
	if ss.Get("sb1").Rewrite(req, "api.example.com") != nil || req.Header.Get("X") != "rotated" {
		t.Fatal("rotation")
	}
	ss.Put("sb1", nil)
	if ss.Get("sb1") != nil {
		t.Fatal("an empty Set stays registered")
	}
	if _, err := NewSet([]Binding{{Placeholder: "nope"}}); err == nil {
		t.Error("bad placeholder accepted")
	}
	if _, err := NewSet([]Binding{{Placeholder: ph1}, {Placeholder: ph1}}); err == nil {
		t.Error("duplicate placeholder accepted")
	}
	if w, err := ParseWhere([]string{"headers", "Body"}); err != nil || w != Headers|Body || w.String() != "headers|body" {
		t.Errorf("ParseWhere: %v %v", w, err)
	}
	if w, _ := ParseWhere(nil); w != DefaultWhere {
		t.Error("default")
	}
	if _, err := ParseWhere([]string{"path"}); err == nil {
		t.Error("unknown location accepted")
	}
}

// A typical API call: a dozen headers, a bearer token, a 2 KiB JSON body.
func BenchmarkRewriteAndLeak(b *testing.B) {
	s := testSet(b)
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 170) + `"}]}`)
	hdr := http.Header{
		"Authorization": {"Bearer " + ph1}, "Content-Type": {"application/json"}, "Accept": {"*/*"},
		"User-Agent": {"python-requests/2.32"}, "Accept-Encoding": {"gzip, deflate"}, "X-Request-Id": {"5f0c6e1e-8d7e-4f5e-9c4b-1d2e3f4a5b6c"},
		"Anthropic-Version": {"2023-06-01"}, "X-Stainless-Os": {"Linux"}, "X-Stainless-Lang": {"python"},
		"X-Stainless-Runtime": {"CPython"}, "Connection": {"keep-alive"}, "Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", "https://api.example.com/v1/messages?beta=true", bytes.NewReader(body))
		req.Header = hdr.Clone()
		if s.Leak(req, "api.example.com") != nil {
			b.Fatal("leak")
		}
		if err := s.Rewrite(req, "api.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeafWarm(b *testing.B) {
	ca := testCA(b)
	ca.Leaf("api.example.com")
	for b.Loop() {
		ca.Leaf("api.example.com")
	}
}

func BenchmarkLeafCold(b *testing.B) {
	ca := testCA(b)
	i := 0
	for b.Loop() {
		i++
		ca.Leaf(fmt.Sprintf("h%d.example.com", i))
	}
}
