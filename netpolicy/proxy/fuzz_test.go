package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSNI: the ClientHello parser never panics, never reads out of
// bounds (Go's bounds checks would panic), returns only names
// it normalised, and any name it returns is stable under re-parsing.
func FuzzSNI(f *testing.F) {
	// Real first flights of Go's TLS client (with and without SNI), kept
	// in files: live captures differ every run, and seeds must not.
	for _, name := range []string{"clienthello-go.bin", "clienthello-go-nosni.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(records(hello(sniExt("api.msb.test")), 7))
	f.Add(records(hello(ext(0x0a0a, nil), sniExt("x.test"), ext(0x1a1a, []byte{0})), 1<<14))
	f.Add(records(hello(), 3))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte{0x16, 3, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := parseClientHello(b)
		if err != nil && name != "" {
			t.Fatalf("name %q with error %v", name, err)
		}
		if name != "" {
			if n2, err := normalizeName(name); err != nil || n2 != name {
				t.Fatalf("returned %q, which normalises to %q, %v", name, n2, err)
			}
		}
		// sniff over a reader of the same bytes agrees and terminates.
		br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(b), eofReader{}), maxHead)
		if s, err := sniff(br); err == nil && s.proto == protoTLS && s.name != name {
			t.Fatalf("sniff %q, parse %q", s.name, name)
		}
	})
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// FuzzHTTPHost: the request and response head parsers, the chunk-size
// parser and the Host normaliser never panic; a parsed request's name is
// normalised and its length lies within the input.
func FuzzHTTPHost(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: web.msb.test\r\n\r\n",
		"GET http://user@Web.msb.test:8080/x?y HTTP/1.1\r\nHost: web.msb.test:8080\r\n\r\n",
		"CONNECT web.msb.test:443 HTTP/1.1\r\nHost: web.msb.test:443\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.0 101 Switching\r\nConnection: upgrade\r\n\r\n",
		"1a;ext=1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, n, err := parseRequestHead(b); err == nil {
			if n <= 0 || n > len(b) {
				t.Fatalf("length %d of %d", n, len(b))
			}
			if h.name != "" {
				if _, err := normalizeName(h.name); err != nil && !isIPLiteral(h.name) {
					t.Fatalf("name %q not normalised", h.name)
				}
			}
			if h.length < 0 {
				t.Fatalf("negative length %d", h.length)
			}
		}
		if _, n, err := parseResponseHead(b); err == nil && (n <= 0 || n > len(b)) {
			t.Fatalf("response length %d of %d", n, len(b))
		}
		if n, ok := chunkSize(b); ok && n < 0 {
			t.Fatalf("chunk size %d", n)
		}
		looksLikeHTTP(b)
		hostName(string(b))
		// copyChunked terminates on any input and never writes more
		// than it read.
		var out bytes.Buffer
		r := bytes.NewReader(b)
		copyChunked(&out, bufio.NewReaderSize(r, 64), r)
		if out.Len() > len(b) {
			t.Fatalf("copied %d of %d bytes", out.Len(), len(b))
		}
	})
}

func isIPLiteral(s string) bool { return net.ParseIP(s) != nil }
