package secretinject

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// Leak detection is a tripwire, not the security boundary. The boundary is
// that a value is only ever substituted where its binding allows; a
// placeholder itself is worthless outside msb. Catching a placeholder on
// its way elsewhere tells the operator an agent tried to send a credential
// somewhere it may not go, and stops the naive ways of doing that. An agent
// that reverses, encrypts or splits the placeholder is not caught, and
// nothing is lost when it is not.
//
// What is searched for is the 24 hex digits after PlaceholderPrefix: they
// are what identifies a binding, and stripping the constant prefix must not
// evade the check. Each binding precomputes its needles:
//
//   - the hex digits, matched case-insensitively (plain, or upper-cased);
//   - the hex digits hex-encoded again (xxd -p; DNS tunnels do this);
//   - their base64 in the standard and URL alphabets at each of the three
//     byte alignments the digits can have inside a longer base64 text. At
//     alignment o the output characters that depend only on the digits are
//     those whose 6 bits lie wholly inside them: ceil(8o/6) up to
//     floor(8(o+24)/6). That stable middle (31 or 32 characters) is what is
//     searched, so nothing has to be decoded;
//   - for DNS names only, base32 (lowercase) at its five alignments.
//
// Percent-encoding (any case of hex, %uXXXX, doubled), JSON/JS escapes
// (\uXXXX, \xXX) and HTML character references are undone by a lenient
// decoder (up to three rounds) before the same search, so "%6D%73…",
// "\u0061…" and a base64 text that was then percent-encoded are all found.
// In bodies, base64 wrapped over lines (MIME) is searched with the line
// breaks taken out.

// holdLen is the most bytes any searched form of a placeholder occupies
// (a fully \u-escaped placeholder is 6 bytes per byte; doubled
// percent-encoding 5). A stream scanner keeps this much back so no form is
// ever split between a window it forwarded and the next.
const holdLen = 6*len(PlaceholderPrefix+"000000000000000000000000") + 16

type needles struct {
	hexDigits string   // 24 lowercase hex digits
	hexHex    string   // the digits, hex-encoded (48 lowercase)
	b64       []string // stable middles, both alphabets, three alignments
	b32       []string // lowercase stable middles, five alignments (DNS)
}

func makeNeedles(ph string) needles {
	d := strings.TrimPrefix(ph, PlaceholderPrefix)
	n := needles{hexDigits: d, hexHex: hex.EncodeToString([]byte(d))}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		n.b64 = appendUnique(n.b64, stableMiddles(d, 6, enc.EncodeToString)...)
	}
	lower := func(b []byte) string {
		return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	}
	n.b32 = stableMiddles(d, 5, lower)
	return n
}

// stableMiddles encodes data behind each possible count of leading bytes
// and keeps the characters (of bits bits each) that depend on data alone.
func stableMiddles(data string, bits int, enc func([]byte) string) []string {
	var out []string
	for o := 0; (o*8)%bits != 0 || o == 0; o++ {
		buf := make([]byte, o+len(data))
		copy(buf[o:], data)
		s := enc(buf)
		from := (8*o + bits - 1) / bits
		to := 8 * (o + len(data)) / bits
		out = append(out, s[from:to])
	}
	return out
}

func appendUnique(dst []string, xs ...string) []string {
	for _, x := range xs {
		dup := false
		for _, d := range dst {
			dup = dup || d == x
		}
		if !dup {
			dst = append(dst, x)
		}
	}
	return dst
}

// Forms a placeholder was found in, for Leak.Where.
const (
	formPlain   = ""
	formHex     = "hex-encoded"
	formBase64  = "base64"
	formBase32  = "base32"
	formEncoded = "escaped" // percent, JSON, HTML escapes undone first
)

// scanOpts choose the extra work a location deserves.
type scanOpts struct {
	lines  bool // also search base64 with line breaks removed (bodies)
	base32 bool // also search base32 (DNS names)
}

// find returns the first of cands whose placeholder appears in s in any
// form, and the form.
func find(s string, cands []*compiledBinding, o scanOpts) (*compiledBinding, string) {
	if len(cands) == 0 || len(s) < 24 {
		return nil, ""
	}
	if b, form := findRaw(s, cands, o); b != nil {
		return b, form
	}
	if strings.ContainsAny(s, "%\\&") {
		d := s
		for range 3 {
			u := unescape(d)
			if u == d {
				break
			}
			d = u
			if b, form := findRaw(d, cands, o); b != nil {
				if form == formPlain {
					return b, formEncoded
				}
				return b, formEncoded + " " + form
			}
		}
	}
	if o.lines && strings.ContainsAny(s, "\r\n") {
		t := strings.NewReplacer("\r", "", "\n", "").Replace(s)
		for _, b := range cands {
			for _, n := range b.needles.b64 {
				if strings.Contains(t, n) {
					return b, formBase64
				}
			}
		}
	}
	return nil, ""
}

func findRaw(s string, cands []*compiledBinding, o scanOpts) (*compiledBinding, string) {
	l := lowerASCII(s)
	for _, b := range cands {
		if strings.Contains(l, b.needles.hexDigits) {
			return b, formPlain
		}
	}
	for _, b := range cands {
		for _, n := range b.needles.b64 {
			if strings.Contains(s, n) {
				return b, formBase64
			}
		}
		if strings.Contains(l, b.needles.hexHex) {
			return b, formHex
		}
		if o.base32 {
			for _, n := range b.needles.b32 {
				if strings.Contains(l, n) {
					return b, formBase32
				}
			}
		}
	}
	return nil, ""
}

// lowerASCII lowercases A-Z only, without allocating when there are none.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// unescape undoes, leniently, percent-encoding (%XX, %uXXXX), JSON and
// JavaScript escapes (\uXXXX, \xXX, \/) and HTML character references
// (&#NN; &#xHH;). Anything malformed is kept as it is.
func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		var r rune = -1
		var n int // bytes consumed
		switch {
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(byte(hexVal(s[i+1 : i+3])))
			i += 2
			continue
		case c == '%' && i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U'):
			r, n = hexRune(s[i+2:], 4), 6
		case c == '\\' && i+1 < len(s):
			switch s[i+1] {
			case 'u', 'U':
				r, n = hexRune(s[i+2:], 4), 6
			case 'x', 'X':
				r, n = hexRune(s[i+2:], 2), 4
			case '/':
				r, n = '/', 2
			}
		case c == '&' && i+3 < len(s) && s[i+1] == '#':
			r, n = charRef(s[i:])
		}
		if r < 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteRune(r)
		i += n - 1
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(s string) int {
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= '9':
			v = v<<4 | int(c-'0')
		case c >= 'a':
			v = v<<4 | int(c-'a'+10)
		default:
			v = v<<4 | int(c-'A'+10)
		}
	}
	return v
}

// hexRune reads exactly n hex digits from s, or returns -1.
func hexRune(s string, n int) rune {
	if len(s) < n {
		return -1
	}
	for i := 0; i < n; i++ {
		if !isHex(s[i]) {
			return -1
		}
	}
	r := rune(hexVal(s[:n]))
	if !utf8.ValidRune(r) {
		return -1
	}
	return r
}

// charRef reads &#NN; or &#xHH; at the start of s.
func charRef(s string) (rune, int) {
	end := strings.IndexByte(s, ';')
	if end < 3 || end > 10 {
		return -1, 0
	}
	body, v := s[2:end], 0
	if body[0] == 'x' || body[0] == 'X' {
		if len(body) < 2 {
			return -1, 0
		}
		for i := 1; i < len(body); i++ {
			if !isHex(body[i]) {
				return -1, 0
			}
		}
		v = hexVal(body[1:])
	} else {
		for i := 0; i < len(body); i++ {
			if body[i] < '0' || body[i] > '9' {
				return -1, 0
			}
			v = v*10 + int(body[i]-'0')
		}
	}
	if !utf8.ValidRune(rune(v)) {
		return -1, 0
	}
	return rune(v), end + 1
}
