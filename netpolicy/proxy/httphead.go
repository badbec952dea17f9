package proxy

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
)

// maxHead bounds an HTTP request or response head, and is the size of the
// per-connection peek buffer. 32 KiB is above what browsers, curl and
// language HTTP clients send (nginx's default large buffer is 8 KiB); larger
// heads are refused with 431.
const maxHead = 32 << 10

var (
	errBadHTTP      = errors.New("malformed HTTP request")
	errHeadTooLarge = errors.New("HTTP head larger than 32 KiB")
)

// reqHead is what the proxy needs to know of one HTTP/1.x request: the name
// it claims and how its body is framed.
type reqHead struct {
	method string
	// name is the host the request addresses: the absolute-form URI's
	// host if present, else the authority of CONNECT, else Host; lower
	// case, no port. "" when there is none (HTTP/1.0 without Host).
	name    string
	chunked bool
	length  int64 // Content-Length, 0 without one
	upgrade bool  // Connection: upgrade with an Upgrade header
	close   bool  // Connection: close, or HTTP/1.0 without keep-alive
	// expectContinue: Expect: 100-continue, the body follows only once
	// the upstream says so (the proxy must not wait for it first).
	expectContinue bool
}

// respHead is the same for a response.
type respHead struct {
	status  int
	chunked bool
	length  int64 // -1: no Content-Length
	close   bool
}

// headEnd returns the length of the head at the start of b (through the
// blank line), or -1 if b does not hold a whole head yet.
func headEnd(b []byte) int {
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		return -1
	}
	return i + 4
}

// parseRequestHead parses the request head at the start of b and returns it
// with its length in bytes. It is deliberately strict — CRLF line ends, no
// obsolete line folding, no space before a colon, one Host, no conflicting
// Content-Length, no Transfer-Encoding next to Content-Length: every request
// the proxy forwards must mean the same to the upstream as to the proxy, or
// a second request could be smuggled past the Host check inside the first
// one's body.
func parseRequestHead(b []byte) (reqHead, int, error) {
	var h reqHead
	n := headEnd(b)
	if n < 0 {
		if len(b) >= maxHead {
			return h, 0, errHeadTooLarge
		}
		return h, 0, errShort
	}
	lines := strings.Split(string(b[:n-4]), "\r\n")
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || !isToken(parts[0]) || parts[1] == "" || !isTarget(parts[1]) {
		return h, 0, errBadHTTP
	}
	h.method = parts[0]
	target := parts[1]
	switch parts[2] {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.close = true
	default:
		return h, 0, errBadHTTP
	}
	f, err := parseFields(lines[1:])
	if err != nil {
		return h, 0, err
	}
	if f.hosts > 1 || (f.hosts == 0 && parts[2] == "HTTP/1.1") {
		return h, 0, errBadHTTP
	}
	// Transfer-Encoding means nothing in HTTP/1.0 to many servers (Go's
	// net/http among them): framing it as chunked here while the upstream
	// reads the "body" as the next request would slip a request with
	// another Host past the check of every request (RFC 9112 section 6.1).
	if f.chunked && parts[2] == "HTTP/1.0" {
		return h, 0, errBadHTTP
	}
	// h2c turns the connection into HTTP/2 streams, each with its own
	// :authority, that this relay would pass unread: refused (HTTP/2 over
	// TLS is a passthrough like any TLS).
	if f.h2c {
		return h, 0, errBadHTTP
	}
	if f.keepAlive && parts[2] == "HTTP/1.0" {
		h.close = false
	}
	h.close = h.close || f.close
	h.chunked, h.length, h.upgrade = f.chunked, f.length, f.upgrade && f.upgradeHdr
	h.expectContinue = f.expectContinue
	if h.length < 0 {
		h.length = 0
	}
	if f.host != "" {
		if h.name, err = hostName(f.host); err != nil {
			return h, 0, err
		}
	}
	var uriHost string
	absolute := h.method == "CONNECT"
	if absolute {
		uriHost = target
	} else if i := strings.Index(target, "://"); i > 0 && target[0] != '/' {
		scheme := strings.ToLower(target[:i])
		if scheme != "http" && scheme != "https" {
			return h, 0, errBadHTTP
		}
		absolute = true
		uriHost = target[i+3:]
		if j := strings.IndexAny(uriHost, "/?#"); j >= 0 {
			uriHost = uriHost[:j]
		}
		if j := strings.LastIndexByte(uriHost, '@'); j >= 0 {
			uriHost = uriHost[j+1:]
		}
	} else if target[0] != '/' && !(target == "*" && h.method == "OPTIONS") {
		return h, 0, errBadHTTP
	}
	if absolute {
		u, err := hostName(uriHost)
		if err != nil || u == "" {
			return h, 0, errBadHTTP
		}
		// RFC 9112 section 3.2.2: the URI's authority wins over Host.
		// A request whose two names disagree is what a fronting attempt
		// looks like, and upstreams differ in which one they honour.
		if f.hosts == 1 && h.name != u {
			return h, 0, errHostMismatch
		}
		h.name = u
	}
	return h, n, nil
}

var errHostMismatch = errors.New("Host does not match the request URI")

// parseResponseHead parses the response head at the start of b.
func parseResponseHead(b []byte) (respHead, int, error) {
	h := respHead{length: -1}
	n := headEnd(b)
	if n < 0 {
		if len(b) >= maxHead {
			return h, 0, errHeadTooLarge
		}
		return h, 0, errShort
	}
	lines := strings.Split(string(b[:n-4]), "\r\n")
	sl := lines[0]
	if len(sl) < 12 || (sl[:9] != "HTTP/1.1 " && sl[:9] != "HTTP/1.0 ") || (len(sl) > 12 && sl[12] != ' ') {
		return h, 0, errors.New("malformed HTTP response")
	}
	for _, c := range sl[9:12] {
		if c < '0' || c > '9' {
			return h, 0, errors.New("malformed HTTP response")
		}
		h.status = h.status*10 + int(c-'0')
	}
	f, err := parseFields(lines[1:])
	if err != nil {
		return h, 0, errors.New("malformed HTTP response")
	}
	h.chunked, h.length = f.chunked, f.length
	h.close = f.close || (sl[:9] == "HTTP/1.0 " && !f.keepAlive)
	return h, n, nil
}

// fields is what parseFields extracts from header lines.
type fields struct {
	host                string
	hosts               int
	length              int64 // -1 if absent
	chunked             bool
	close, keepAlive    bool
	upgrade, upgradeHdr bool // Connection: upgrade; an Upgrade header
	h2c                 bool // the Upgrade header offers h2c
	expectContinue      bool
}

func parseFields(lines []string) (fields, error) {
	f := fields{length: -1}
	te := false
	for _, l := range lines {
		i := strings.IndexByte(l, ':')
		if i <= 0 || !isToken(l[:i]) {
			return f, errBadHTTP // also catches obs-fold (leading SP/HT)
		}
		name, v := l[:i], strings.Trim(l[i+1:], " \t")
		for j := 0; j < len(v); j++ {
			if c := v[j]; (c < 0x20 && c != '\t') || c == 0x7f {
				return f, errBadHTTP
			}
		}
		switch strings.ToLower(name) {
		case "host":
			f.hosts++
			f.host = v
		case "content-length":
			n, ok := parseLength(v)
			if !ok || (f.length >= 0 && f.length != n) {
				return f, errBadHTTP
			}
			f.length = n
		case "transfer-encoding":
			te = true
			// Only "chunked" as the final coding frames a message we
			// can follow; anything else is refused.
			codings := strings.Split(v, ",")
			if !strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") || f.chunked {
				return f, errBadHTTP
			}
			f.chunked = true
		case "connection":
			for _, t := range strings.Split(v, ",") {
				switch strings.ToLower(strings.TrimSpace(t)) {
				case "close":
					f.close = true
				case "keep-alive":
					f.keepAlive = true
				case "upgrade":
					f.upgrade = true
				}
			}
		case "upgrade":
			f.upgradeHdr = true
			for _, p := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(p), "h2c") {
					f.h2c = true
				}
			}
		}
	}
	if te && f.length >= 0 {
		return f, errBadHTTP // RFC 9112 section 6.1: a smuggling signature
	}
	return f, nil
}

func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// hostName turns a Host value or URI authority ("Example.COM:8080",
// "[::1]:80", "1.2.3.4") into the name AllowConn is asked about.
func hostName(a string) (string, error) {
	if a == "" {
		return "", nil
	}
	if a[0] == '[' {
		end := strings.IndexByte(a, ']')
		if end < 0 || !validPort(a[end+1:]) {
			return "", errBadName
		}
		ip, err := netip.ParseAddr(a[1:end])
		if err != nil || ip.Zone() != "" {
			return "", errBadName
		}
		return ip.String(), nil
	}
	if i := strings.IndexByte(a, ':'); i >= 0 {
		if !validPort(a[i:]) {
			return "", errBadName
		}
		a = a[:i]
	}
	return normalizeName(a)
}

// validPort accepts "" or ":digits" (an empty port is legal in a URI).
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' || len(s) > 6 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func isTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// looksLikeHTTP reports whether b starts like an HTTP/1.x request line:
// an upper-case method token and a space. errShort: can't tell yet.
func looksLikeHTTP(b []byte) (bool, error) {
	for i, c := range b {
		switch {
		case c == ' ':
			return i > 0, nil
		case (c >= 'A' && c <= 'Z') || c == '-' || c == '_':
			if i >= 20 {
				return false, nil
			}
		default:
			return false, nil
		}
	}
	return false, errShort
}
