package secretinject

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MaxBufferedBody is the largest request body Rewrite holds in memory to
// search and substitute before anything is sent.
const MaxBufferedBody = 8 << 20

// ErrHostMismatch: the request's Host (or :authority) is not the host the
// proxy intercepted for. Rewrite refuses such a request outright.
var ErrHostMismatch = errors.New("request Host does not match the intercepted host")

// Rewrite prepares req, received on a TLS connection the proxy terminated
// for host (the SNI it checked), to be sent upstream: every placeholder is
// replaced by its value where its binding allows host and the location,
// and anything else is refused with a *Leak (nothing is changed then,
// except for a streamed body, below).
//
// Locations: every header value (and trailer), the decoded user and
// password of Authorization: Basic (re-encoded), decoded query keys and
// values (re-encoded, other parameters kept byte for byte), and the body.
// Only the exact placeholder is replaced; an encoded one is left as it is
// (it leaks nothing where its binding may go anyway).
//
// Bodies, three cases:
//   - known length up to MaxBufferedBody: read, searched and substituted
//     whole before anything is sent; Content-Length is fixed and GetBody
//     set;
//   - unknown length (HTTP/1.1 chunked, an HTTP/2 stream without
//     content-length): substituted as it streams, holding back a few
//     hundred bytes; it stays of unknown length (chunked upstream), so a
//     long-lived streaming upload keeps flowing. A leak found mid-stream
//     fails the body's Read with a *Leak: the head has gone upstream but
//     no byte of the placeholder has, and the proxy must then reset both
//     connections;
//   - known length above MaxBufferedBody: streamed unchanged, and a
//     placeholder of any binding in it fails the Read with a *Leak (it
//     cannot be substituted without breaking the declared length).
func (s *Set) Rewrite(req *http.Request, host string) error {
	host = normHost(host)
	if normHost(req.Host) != host {
		return fmt.Errorf("%w: Host %q, intercepted %q", ErrHostMismatch, req.Host, host)
	}
	if s.Len() == 0 {
		return nil
	}
	if l := s.leakInHead(req, host); l != nil {
		return l
	}
	if l, err := s.prepareBody(req, host, true); l != nil {
		return l
	} else if err != nil {
		return err
	}
	if err := s.substituteHeader(req.Header, host); err != nil {
		return err
	}
	if req.URL != nil && req.URL.RawQuery != "" {
		if subs := s.permitted(host, Query); len(subs) > 0 {
			req.URL.RawQuery = substituteQuery(req.URL.RawQuery, subs)
		}
	}
	return nil
}

// replaceAll substitutes every exact placeholder of subs in v.
func replaceAll(v string, subs []*compiledBinding) string {
	if !strings.Contains(v, PlaceholderPrefix) {
		return v
	}
	for _, b := range subs {
		v = strings.ReplaceAll(v, b.Placeholder, string(b.Value))
	}
	return v
}

func (s *Set) substituteHeader(h http.Header, host string) error {
	hdr, basic := s.permitted(host, Headers), s.permitted(host, BasicAuth)
	if len(hdr) == 0 && len(basic) == 0 {
		return nil
	}
	for name, vals := range h {
		for i, v := range vals {
			if !strings.Contains(v, PlaceholderPrefix) && !strings.EqualFold(name, "Authorization") {
				continue
			}
			nv := v
			if dec, ok := basicCredentials(name, v); ok {
				if d := replaceAll(dec, basic); d != dec {
					nv = "Basic " + base64.StdEncoding.EncodeToString([]byte(d))
				}
			} else {
				nv = replaceAll(v, hdr)
			}
			if nv == v {
				continue
			}
			if !validHeaderValue(nv) {
				// Name the binding, never the value.
				return fmt.Errorf("a value substituted in header %s is not a valid header value (control characters)", name)
			}
			vals[i] = nv
		}
	}
	return nil
}

// substituteQuery rewrites the parameters holding a placeholder (decoded)
// and keeps all others exactly as sent.
func substituteQuery(raw string, subs []*compiledBinding) string {
	parts := strings.Split(raw, "&")
	changed := false
	for i, p := range parts {
		k, v, hasEq := strings.Cut(p, "=")
		nk, ck := substituteQueryPart(k, subs)
		nv, cv := substituteQueryPart(v, subs)
		if ck || cv {
			changed = true
			parts[i] = nk
			if hasEq {
				parts[i] += "=" + nv
			}
		}
	}
	if !changed {
		return raw
	}
	return strings.Join(parts, "&")
}

func substituteQueryPart(p string, subs []*compiledBinding) (string, bool) {
	d, err := url.QueryUnescape(p)
	if err != nil {
		return p, false
	}
	n := replaceAll(d, subs)
	if n == d {
		return p, false
	}
	return url.QueryEscape(n), true
}

// prepareBody searches (and when subst, substitutes in) req's body as
// Rewrite describes, leaving a body that can be sent. It returns a leak
// found now, or a read error.
func (s *Set) prepareBody(req *http.Request, host string, subst bool) (*Leak, error) {
	var subs []*compiledBinding
	if subst {
		subs = s.permitted(host, Body)
	}
	cands := s.forbidden(host, Body)
	if req.Body == nil || req.Body == http.NoBody {
		return s.leakInTrailer(req, host, subst), nil
	}
	st := &streamer{r: req.Body, closer: req.Body, host: host, set: s, cands: cands, subs: subs, where: "body"}
	switch n := req.ContentLength; {
	case n > MaxBufferedBody:
		st.cands, st.subs, st.where = s.d.bindings, nil, "body (too large to substitute in)"
		st.onEOF = func() *Leak { return s.leakInTrailer(req, host, subst) }
		req.Body = st
		return nil, nil
	case n < 0:
		st.onEOF = func() *Leak { return s.leakInTrailer(req, host, subst) }
		req.Body = st
		return nil, nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, MaxBufferedBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	if len(buf) > MaxBufferedBody { // the length lied; a server would not let it
		return nil, errors.New("request body longer than its Content-Length")
	}
	if b, f := find(bytesView(buf), cands, scanOpts{lines: true}); b != nil {
		return s.leak(b, "body", f, host), nil
	}
	if l := s.leakInTrailer(req, host, subst); l != nil {
		return l, nil
	}
	for _, b := range subs {
		if bytes.Contains(buf, []byte(b.Placeholder)) {
			buf = bytes.ReplaceAll(buf, []byte(b.Placeholder), b.Value)
		}
	}
	orig := req.Body
	req.ContentLength = int64(len(buf))
	if req.Header.Get("Content-Length") != "" {
		req.Header.Set("Content-Length", strconv.Itoa(len(buf)))
	}
	req.Body = &bufBody{Reader: bytes.NewReader(buf), orig: orig}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil, nil
}

// leakInTrailer searches the trailers (filled in once the body is read)
// and, when subst, substitutes in them as in headers.
func (s *Set) leakInTrailer(req *http.Request, host string, subst bool) *Leak {
	if len(req.Trailer) == 0 {
		return nil
	}
	if l := s.leakInHeader(req.Trailer, "trailer", host); l != nil {
		return l
	}
	if subst {
		if err := s.substituteHeader(req.Trailer, host); err != nil {
			return &Leak{Where: "trailer (invalid value)", Host: host}
		}
	}
	return nil
}

// bufBody is a buffered body that still closes the original.
type bufBody struct {
	*bytes.Reader
	orig io.Closer
}

func (b *bufBody) Close() error { return b.orig.Close() }

// streamer searches and substitutes a stream in windows: each window is
// the unsent tail of the previous one (at least holdLen bytes, the longest
// form a placeholder can take) plus what was read since, so every
// occurrence lies whole inside some window before any of its bytes is
// returned.
type streamer struct {
	r      io.Reader
	closer io.Closer
	set    *Set
	host   string
	where  string
	cands  []*compiledBinding // any form of these is a leak
	subs   []*compiledBinding // exact placeholders of these are substituted
	onEOF  func() *Leak

	win []byte // read, not yet released
	out []byte // released, not yet returned
	err error
}

const streamChunk = 32 << 10

func (st *streamer) Read(p []byte) (int, error) {
	for len(st.out) == 0 && st.err == nil {
		st.fill()
	}
	if len(st.out) > 0 {
		n := copy(p, st.out)
		st.out = st.out[n:]
		return n, nil
	}
	return 0, st.err
}

func (st *streamer) fill() {
	if cap(st.win)-len(st.win) < streamChunk {
		st.win = append(st.win, make([]byte, streamChunk)...)[:len(st.win)]
	}
	n, rerr := st.r.Read(st.win[len(st.win):cap(st.win)])
	st.win = st.win[:len(st.win)+n]
	if n == 0 && rerr == nil {
		return
	}
	if b, f := find(bytesView(st.win), st.cands, scanOpts{lines: true}); b != nil {
		st.err, st.win = st.set.leak(b, st.where, f, st.host), nil
		return
	}
	cut := len(st.win) - holdLen
	if rerr != nil {
		cut = len(st.win)
	} else if cut <= 0 {
		return
	} else {
		cut = avoidSplit(st.win, cut)
	}
	rel := st.win[:cut]
	for _, b := range st.subs {
		if bytes.Contains(rel, []byte(b.Placeholder)) {
			rel = bytes.ReplaceAll(rel, []byte(b.Placeholder), b.Value)
		}
	}
	st.out = append(st.out[:0], rel...)
	st.win = append(st.win[:0], st.win[cut:]...)
	if rerr != nil {
		st.err = rerr
		if rerr == io.EOF && st.onEOF != nil {
			if l := st.onEOF(); l != nil {
				st.out, st.err = nil, l
			}
		}
	}
}

// avoidSplit moves cut back to the start of a placeholder that would
// straddle it, so substitution always sees the whole placeholder.
func avoidSplit(w []byte, cut int) int {
	const n = len(PlaceholderPrefix) + 24
	from := max(0, cut-n+1)
	if i := bytes.Index(w[from:min(len(w), cut+n)], []byte(PlaceholderPrefix)); i >= 0 && from+i < cut {
		return from + i
	}
	return cut
}

func (st *streamer) Close() error {
	if st.closer != nil {
		return st.closer.Close()
	}
	return nil
}

// validHeaderValue: no control characters but tab (RFC 9110 field-value),
// so a value can never split a header or smuggle another.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
