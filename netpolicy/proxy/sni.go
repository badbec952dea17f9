package proxy

import (
	"encoding/binary"
	"errors"
)

// maxHello bounds the ClientHello handshake message we are willing to
// reassemble. Real ClientHellos are a few hundred bytes, post-quantum key
// shares and ECH take them to 2-3 KiB; 16 KiB is one full TLS record and far
// above anything a browser or TLS library sends, while keeping the peek
// buffer per connection small.
const maxHello = 16 << 10

var (
	// errShort means the bytes seen so far are a consistent prefix: read more.
	errShort = errors.New("need more bytes")
	// errNotTLS means the bytes are not a TLS handshake record.
	errNotTLS       = errors.New("not a TLS ClientHello")
	errBadHello     = errors.New("malformed ClientHello")
	errHelloTooLong = errors.New("ClientHello larger than 16 KiB")
	errBadName      = errors.New("invalid host name")
)

// parseClientHello reads the server name from the TLS records at the start
// of b. It returns errShort when b ends before the ClientHello does, so the
// caller can peek further; "" with a nil error when the ClientHello carries
// no server_name extension. The handshake message may be split across
// several records (as some clients and middleboxes do); only handshake
// records may carry it. Nothing is read beyond len(b) and at most maxHello
// bytes are copied.
func parseClientHello(b []byte) (string, error) {
	msg, err := helloMessage(b)
	if err != nil {
		return "", err
	}
	name, err := helloSNI(msg)
	if err != nil || name == "" {
		return "", err
	}
	return normalizeName(name)
}

// helloMessage returns the ClientHello handshake body (after the 4-byte
// handshake header), reassembled from as many records as needed.
func helloMessage(b []byte) ([]byte, error) {
	var (
		buf  []byte // reassembly buffer, only when the message spans records
		body []byte // the message so far (a sub-slice of b, or buf)
		want = -1   // handshake body length, once the header is known
	)
	for first := true; ; first = false {
		if len(b) < 5 {
			if len(b) > 0 && (b[0] != 0x16 || (len(b) > 1 && b[1] != 3)) {
				return nil, notTLS(first)
			}
			return nil, errShort
		}
		if b[0] != 0x16 || b[1] != 3 {
			return nil, notTLS(first)
		}
		rlen := int(binary.BigEndian.Uint16(b[3:5]))
		if rlen == 0 || rlen > 1<<14 {
			return nil, errBadHello
		}
		frag := b[5:]
		complete := len(frag) >= rlen
		if complete {
			frag = frag[:rlen]
		}
		if first && complete && len(frag) >= 4 {
			// The common case: header and whole message in one record.
			if frag[0] != 1 {
				return nil, errBadHello
			}
			want = int(frag[1])<<16 | int(frag[2])<<8 | int(frag[3])
			if want > maxHello {
				return nil, errHelloTooLong
			}
			if len(frag)-4 >= want {
				return frag[4 : 4+want], nil
			}
		}
		if len(buf)+len(frag) > maxHello+4 {
			frag = frag[:maxHello+4-len(buf)]
		}
		buf = append(buf, frag...)
		if want < 0 && len(buf) >= 4 {
			if buf[0] != 1 {
				return nil, errBadHello
			}
			want = int(buf[1])<<16 | int(buf[2])<<8 | int(buf[3])
			if want > maxHello {
				return nil, errHelloTooLong
			}
		}
		if want >= 0 && len(buf)-4 >= want {
			body = buf[4 : 4+want]
			return body, nil
		}
		if !complete {
			return nil, errShort
		}
		b = b[5+rlen:]
	}
}

func notTLS(first bool) error {
	if first {
		return errNotTLS
	}
	// A non-handshake record before the ClientHello is complete.
	return errBadHello
}

// helloSNI walks a ClientHello body to the server_name extension (RFC 6066
// section 3) and returns its host_name entry.
func helloSNI(m []byte) (string, error) {
	r := reader{b: m}
	r.skip(2 + 32)      // legacy_version, random
	r.skip(int(r.u8())) // legacy_session_id
	cs := int(r.u16())  // cipher_suites
	if cs < 2 || cs%2 != 0 {
		return "", errBadHello
	}
	r.skip(cs)
	nc := int(r.u8()) // legacy_compression_methods
	r.skip(nc)
	if r.bad || nc < 1 {
		return "", errBadHello
	}
	if r.empty() {
		return "", nil // no extensions at all
	}
	exts := reader{b: r.bytes(int(r.u16()))}
	if r.bad || !r.empty() {
		return "", errBadHello
	}
	var name string
	seen := false
	for !exts.empty() {
		typ := exts.u16()
		data := exts.bytes(int(exts.u16()))
		if exts.bad {
			return "", errBadHello
		}
		if typ != 0 {
			continue // includes GREASE values, which are never 0
		}
		if seen {
			return "", errBadHello // duplicate extensions are illegal
		}
		seen = true
		list := reader{b: data}
		entries := reader{b: list.bytes(int(list.u16()))}
		if list.bad || !list.empty() || entries.empty() {
			return "", errBadHello
		}
		for !entries.empty() {
			t := entries.u8()
			v := entries.bytes(int(entries.u16()))
			if entries.bad || len(v) == 0 {
				return "", errBadHello
			}
			if t == 0 && name == "" {
				name = string(v)
			}
		}
	}
	return name, nil
}

// reader is a bounds-checked cursor: any read past the end sets bad and
// yields zero values, so parsers check once at the end of a step.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) empty() bool { return len(r.b) == 0 }

func (r *reader) bytes(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) skip(n int) { r.bytes(n) }

func (r *reader) u8() uint8 {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u16() uint16 {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

// normalizeName checks that s is a DNS name (or an IP literal, which
// AllowConn then judges by IP rules) and returns it lower case without a
// trailing dot, the form Rule.Domain uses. Anything else (spaces, slashes,
// NULs) is refused rather than handed to matching: a name the proxy and the
// upstream would read differently is how filters are bypassed.
func normalizeName(s string) (string, error) {
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	if len(s) == 0 || len(s) > 253 {
		return "", errBadName
	}
	out := []byte(s)
	label := 0
	for i, c := range out {
		switch {
		case c >= 'A' && c <= 'Z':
			out[i] = c + 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if label == 0 {
				return "", errBadName
			}
			label = -1
		default:
			return "", errBadName
		}
		label++
		if label > 63 {
			return "", errBadName
		}
	}
	if label == 0 {
		return "", errBadName
	}
	return string(out), nil
}
