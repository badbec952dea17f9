package secretinject

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unsafe"
)

// Leak is a placeholder found where it may not go. It names the Secret,
// the key, the location (and the form it was found in) and the
// destination, never the value. A *Leak is also the error Rewrite and the
// stream guards return, so callers can errors.As it into an Event
// (SecretLeakBlocked) and a decision log entry.
type Leak struct {
	Secret string // namespace/name
	Key    string
	Where  string // "header X-Api-Key", "body (base64)", "dns name", …
	Host   string // where it was going ("" when unknown to this package)
}

func (l *Leak) Error() string {
	host := l.Host
	if host == "" {
		host = "an unknown host"
	}
	return fmt.Sprintf("placeholder of secret %s key %s may not be sent to %s in %s", l.Secret, l.Key, host, l.Where)
}

func (s *Set) leak(b *compiledBinding, where, form, host string) *Leak {
	if form != "" {
		where += " (" + form + ")"
	}
	return &Leak{Secret: b.Secret, Key: b.Key, Where: where, Host: host}
}

// nowhere is a location no binding may be substituted in: the URL path,
// header names, userinfo, Host, DNS names, plain HTTP.
const nowhere Where = 0

// forbidden returns the bindings that may not appear at loc for host:
// those whose placeholder there would be a leak.
func (s *Set) forbidden(host string, loc Where) []*compiledBinding {
	var out []*compiledBinding
	for i, b := range s.d.bindings {
		if b.permits(host, loc) {
			if out == nil {
				out = append(make([]*compiledBinding, 0, len(s.d.bindings)), s.d.bindings[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, b)
		}
	}
	if out == nil {
		return s.d.bindings // no allocation in the common all-forbidden case
	}
	return out
}

// permitted is the complement of forbidden.
func (s *Set) permitted(host string, loc Where) []*compiledBinding {
	var out []*compiledBinding
	for _, b := range s.d.bindings {
		if b.permits(host, loc) {
			out = append(out, b)
		}
	}
	return out
}

// Leak reports the first placeholder in req that may not go to host where
// it is: a binding that does not allow host, or a location its binding
// does not allow (the URL path, header names and userinfo are allowed for
// none). Pass host "" for plain HTTP, where every placeholder is a leak.
//
// The body is searched when its length is known and at most
// MaxBufferedBody: it is read and put back, so req stays sendable. A
// longer or unknown-length body is wrapped instead; its reads fail with a
// *Leak before any byte of a placeholder is returned.
func (s *Set) Leak(req *http.Request, host string) *Leak {
	if s.Len() == 0 {
		return nil
	}
	host = normHost(host)
	if l := s.leakInHead(req, host); l != nil {
		return l
	}
	l, _ := s.prepareBody(req, host, false)
	return l
}

// leakInHead searches everything but the body and trailers.
func (s *Set) leakInHead(req *http.Request, host string) *Leak {
	all := s.d.bindings
	if b, f := find(req.Host, all, scanOpts{}); b != nil {
		return s.leak(b, "host", f, host)
	}
	if u := req.URL; u != nil {
		if b, f := find(u.EscapedPath()+u.Opaque, all, scanOpts{}); b != nil {
			return s.leak(b, "url path", f, host)
		}
		if u.User != nil {
			if b, f := find(u.User.String(), all, scanOpts{}); b != nil {
				return s.leak(b, "url userinfo", f, host)
			}
		}
		if b, f := find(u.RawQuery, s.forbidden(host, Query), scanOpts{}); b != nil {
			return s.leak(b, "query", f, host)
		}
	}
	return s.leakInHeader(req.Header, "header", host)
}

// leakInHeader searches names and values of h; what is Authorization:
// Basic is searched decoded, as basic auth.
func (s *Set) leakInHeader(h http.Header, kind, host string) *Leak {
	var hdr, basic []*compiledBinding
	for name, vals := range h {
		if b, f := find(name, s.d.bindings, scanOpts{}); b != nil {
			return s.leak(b, kind+" name", f, host)
		}
		for _, v := range vals {
			if dec, ok := basicCredentials(name, v); ok {
				if basic == nil {
					basic = s.forbidden(host, BasicAuth)
				}
				if b, f := find(dec, basic, scanOpts{}); b != nil {
					return s.leak(b, "basic auth", f, host)
				}
				continue
			}
			if hdr == nil {
				hdr = s.forbidden(host, Headers)
			}
			if b, f := find(v, hdr, scanOpts{}); b != nil {
				return s.leak(b, kind+" "+name, f, host)
			}
		}
	}
	return nil
}

// basicCredentials decodes an Authorization: Basic value into "user:pass".
func basicCredentials(name, v string) (string, bool) {
	if !strings.EqualFold(name, "Authorization") {
		return "", false
	}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", false
	}
	return string(dec), true
}

// LeakInBytes searches raw bytes the proxy can read but not substitute in
// (plain HTTP heads and bodies, say) for any placeholder of the Set, in
// every form. Any is a leak: a value never goes out in clear. For a
// stream, use GuardStream: a chunk boundary may split a placeholder.
func (s *Set) LeakInBytes(b []byte) *Leak {
	if s.Len() == 0 {
		return nil
	}
	if c, f := find(bytesView(b), s.d.bindings, scanOpts{lines: true}); c != nil {
		return s.leak(c, "plain connection", f, "")
	}
	return nil
}

// LeakInName searches a DNS query name. Resolvers may lowercase a name and
// an exfiltrating client splits long data over labels, so the labels are
// searched both as they are and joined (dots removed), case-insensitively,
// for the hex digits, their hex encoding, base32 (lowercase; the usual DNS
// tunnel alphabet) and base64 (case preserved; a resolver that folds case
// defeats it). A placeholder needs 24 hex digits, so names with fewer
// characters are clean.
func (s *Set) LeakInName(name string) *Leak {
	if s.Len() == 0 {
		return nil
	}
	joined := strings.ReplaceAll(strings.ReplaceAll(name, ".", ""), "-", "")
	for _, v := range []string{name, joined} {
		if b, f := find(v, s.d.bindings, scanOpts{base32: true}); b != nil {
			return s.leak(b, "dns name", f, strings.TrimSuffix(name, "."))
		}
	}
	return nil
}

// GuardStream wraps r (a body or byte stream the proxy relays as it
// reads) so that a Read fails with a *Leak (Host set to host) before any
// byte of a placeholder of the Set, in any form, is returned. It keeps a
// few hundred bytes back until it has seen what follows them. Nothing is
// substituted: use it for plain HTTP bodies and any stream that may carry
// no placeholder at all.
func (s *Set) GuardStream(r io.Reader, host string) io.Reader {
	if s.Len() == 0 {
		return r
	}
	return &streamer{r: r, host: normHost(host), set: s, cands: s.d.bindings, where: "stream"}
}

// bytesView is a read-only string view of b, to search a body without
// copying it; b must not change while the view is in use.
func bytesView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
