package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
)

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func sniExt(name string) []byte {
	entry := append([]byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
	entry = append(entry, name...)
	return ext(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(entry))), entry...))
}

// hello builds a ClientHello handshake message with the given extensions
// (none at all when exts is nil).
func hello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)       // random
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0) // session id, suites, compression
	if exts != nil {
		var all []byte
		for _, e := range exts {
			all = append(all, e...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(all)))
		body = append(body, all...)
	}
	n := len(body)
	return append([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// records frames msg as handshake records of at most size bytes each.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestParseClientHello(t *testing.T) {
	big := ext(21, make([]byte, 17000)) // padding beyond maxHello
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"one record", records(hello(sniExt("api.msb.test")), 1<<14), "api.msb.test", nil},
		{"split records", records(hello(sniExt("api.msb.test")), 7), "api.msb.test", nil},
		{"grease first", records(hello(ext(0x0a0a, nil), sniExt("api.msb.test"), ext(0x1a1a, []byte{0})), 1<<14), "api.msb.test", nil},
		{"upper case, trailing dot", records(hello(sniExt("API.Msb.Test.")), 1<<14), "api.msb.test", nil},
		{"no extensions", records(hello(), 1<<14), "", nil},
		{"no sni", records(hello(ext(10, []byte{0, 2, 0, 29})), 1<<14), "", nil},
		{"too long", records(hello(big), 1<<14), "", errHelloTooLong},
		{"two sni", records(hello(sniExt("a.test"), sniExt("b.test")), 1<<14), "", errBadHello},
		{"bad name", records(hello(sniExt("a b.test")), 1<<14), "", errBadName},
		{"not tls", []byte("GET / HTTP/1.1\r\n"), "", errNotTLS},
		{"alert inside", append(records(hello(sniExt("a.test"))[:20], 20), 0x15, 3, 1, 0, 2, 2, 40), "", errBadHello},
	} {
		got, err := parseClientHello(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%s: %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	// Every proper prefix of a valid ClientHello asks for more bytes.
	in := records(hello(ext(0x0a0a, nil), sniExt("api.msb.test")), 11)
	for i := 0; i < len(in); i++ {
		if _, err := parseClientHello(in[:i]); err != errShort {
			t.Fatalf("prefix %d/%d: %v", i, len(in), err)
		}
	}
}

// captureHello returns the first flight crypto/tls sends for cfg.
func captureHello(cfg *tls.Config) []byte {
	c := &captureConn{}
	tls.Client(c, cfg).Handshake()
	return c.buf
}

type captureConn struct {
	net.Conn
	buf []byte
}

func (c *captureConn) Write(b []byte) (int, error)      { c.buf = append(c.buf, b...); return len(b), nil }
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

func TestParseRealClientHello(t *testing.T) {
	b := captureHello(&tls.Config{ServerName: "Real.msb.test"})
	if got, err := parseClientHello(b); got != "real.msb.test" || err != nil {
		t.Fatalf("%q, %v", got, err)
	}
}

// refragConn re-frames the client's first TLS record (the ClientHello)
// into 40-byte records written a few bytes at a time: the proxy must
// reassemble both across TCP segments and across records.
type refragConn struct {
	net.Conn
	done bool
}

func (c *refragConn) Write(b []byte) (int, error) {
	if c.done || len(b) < 5 || b[0] != 0x16 {
		return c.Conn.Write(b)
	}
	c.done = true
	n := int(binary.BigEndian.Uint16(b[3:5]))
	out := records(b[5:5+n], 40)
	for len(out) > 0 {
		k := min(3, len(out))
		if _, err := c.Conn.Write(out[:k]); err != nil {
			return 0, err
		}
		out = out[k:]
	}
	if _, err := c.Conn.Write(b[5+n:]); err != nil {
		return 0, err
	}
	return len(b), nil
}

func TestTLSFragmentedHello(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	f := newFake()
	f.allowName("tls.msb.test", up)
	_, addr := startProxy(t, f, &up, nil)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetNoDelay(true)
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(&refragConn{Conn: raw}, &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: tls.msb.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
	if !strings.HasSuffix(string(b), "tls.msb.test") {
		t.Fatalf("%q", b)
	}
	f.waitDecision(t, func(d netpolicy.Decision) bool { return d.Name == "tls.msb.test" && d.Allowed })
}

func TestHostName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.msb.test:8080": "example.msb.test",
		"[::1]:80":              "::1",
		"10.0.0.1":              "10.0.0.1",
		"a.test.":               "a.test",
	} {
		if got, err := hostName(in); got != want || err != nil {
			t.Errorf("%q: %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"a b", "a/b", "[::1", "a:x", "a..b", ".", "a@b", "[fe80::1%eth0]"} {
		if got, err := hostName(in); err == nil {
			t.Errorf("%q: %q, want an error", in, got)
		}
	}
}

func TestSniff(t *testing.T) {
	for in, want := range map[string]sniffed{
		h2Preface + "\x00\x00":                   {proto: protoOther},
		"SSH-2.0-OpenSSH_9.2\r\n":                {proto: protoOther},
		"GET / HTTP/1.1\r\nHost: A.test\r\n\r\n": {proto: protoHTTP, name: "a.test"},
	} {
		s, err := sniff(bufio.NewReaderSize(strings.NewReader(in), maxHead))
		if err != nil || s.proto != want.proto || s.name != want.name {
			t.Errorf("%q: %+v, %v", in, s, err)
		}
	}
	if _, err := sniff(bufio.NewReaderSize(strings.NewReader("PRI * HTTP/2.0\r\n"), maxHead)); err == nil {
		t.Error("truncated h2 preface accepted")
	}
}
