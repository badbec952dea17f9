package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/netpolicy"
)

// tlsUpstream is a loopback TLS server answering "hello from NAME" to any
// HTTP request, with a certificate for the given names.
func tlsUpstream(t *testing.T, pki testPKI) netip.AddrPort {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.leaf}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.TLS.ServerName)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return addrPort(t, ln.Addr())
}

func TestTLSPassthrough(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	f := newFake()
	f.allowName("tls.msb.test", up)
	_, addr := startProxy(t, f, &up, nil)

	// The client verifies the upstream's own certificate against the
	// test CA: the proxy must not have touched the handshake.
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: tls.msb.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello from tls.msb.test" {
		t.Fatalf("body %q", body)
	}
	d := f.waitDecision(t, func(d netpolicy.Decision) bool { return d.Name == "tls.msb.test" })
	if !d.Allowed || d.Sandbox != "sb-1" || d.Kind != netpolicy.KindTCP || d.Addr != up.Addr() || d.Port != up.Port() {
		t.Fatalf("decision %+v", d)
	}
}

func TestTLSRefusals(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	f := newFake()
	f.allowName("tls.msb.test", netip.MustParseAddrPort("127.0.0.1:1")) // pinned elsewhere
	_, addr := startProxy(t, f, &up, nil)

	for _, tc := range []struct{ sni, reason string }{
		{"", "no policy allows this name"},             // no SNI, no IP rule
		{"tls.msb.test", "address not pinned to name"}, // allowed name, wrong address
		{"other.msb.test", "no policy allows this name"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// Go omits SNI when ServerName is empty.
		err = tls.Client(c, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}).Handshake()
		c.Close()
		if err == nil {
			t.Fatalf("sni %q: handshake succeeded", tc.sni)
		}
		d := f.waitDecision(t, func(d netpolicy.Decision) bool { return d.Name == tc.sni && !d.Allowed })
		if d.Reason != tc.reason {
			t.Fatalf("sni %q: reason %q, want %q", tc.sni, d.Reason, tc.reason)
		}
	}
}

func TestTLSNoSNIAllowedByIPRule(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	up := tlsUpstream(t, pki)
	f := newFake()
	f.ips[up] = true
	_, addr := startProxy(t, f, &up, nil)
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestSlowClient: a client that sends nothing is closed after PeekTimeout
// (no IP rule would admit it without a name), and the refusal recorded.
func TestSlowClient(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:1")
	f := newFake()
	_, addr := startProxy(t, f, &up, func(o *Options) { o.PeekTimeout = 50 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := readAllBounded(c); err != io.EOF {
		t.Fatalf("read: %v, want EOF from the proxy closing", err)
	}
	d := f.waitDecision(t, func(d netpolicy.Decision) bool { return !d.Allowed })
	if !strings.Contains(d.Reason, "sent nothing") {
		t.Fatalf("decision %+v", d)
	}
}

// TestUpstreamBlackHole: a destination that never answers the SYN costs
// the sandbox DialTimeout, after which its connection is reset.
func TestUpstreamBlackHole(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:9")
	f := newFake()
	f.ips[up] = true
	dialing := make(chan struct{}, 1)
	_, addr := startProxy(t, f, &up, func(o *Options) {
		o.DialTimeout = 50 * time.Millisecond
		o.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			dialing <- struct{}{}
			<-ctx.Done() // what a dropped SYN looks like
			return nil, ctx.Err()
		}
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "\x00opaque")
	<-dialing
	if _, err := readAllBounded(c); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the connection closed", err)
	}
}

// TestUpstreamSilent: an upstream that accepts but never answers is
// closed by the idle watchdog, and both sides see it.
func TestUpstreamSilent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	upClosed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			upClosed <- err
			return
		}
		defer c.Close()
		_, err = readAllBounded(c) // reads the request, never answers
		upClosed <- err
	}()
	up := addrPort(t, ln.Addr())
	f := newFake()
	f.allowName("silent.msb.test", up)
	_, addr := startProxy(t, f, &up, func(o *Options) { o.IdleTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: silent.msb.test\r\n\r\n")
	if _, err := readAllBounded(c); err != io.EOF {
		t.Fatalf("sandbox side: %v, want EOF", err)
	}
	if err := <-upClosed; err != io.EOF {
		t.Fatalf("upstream side: %v, want EOF", err)
	}
}

func TestUnknownSource(t *testing.T) {
	up := netip.MustParseAddrPort("127.0.0.1:1")
	f := newFake()
	_, addr := startProxy(t, f, &up, nil)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := readAllBounded(c); err != io.EOF {
		t.Fatalf("read: %v, want EOF", err)
	}
	if r := f.decisions(); len(r) != 0 {
		t.Fatalf("recorded %+v for an unknown source", r)
	}
}

func TestMaxConnsPerSandbox(t *testing.T) {
	up := httpUpstream(t)
	f := newFake()
	f.allowName("web.msb.test", up)
	_, addr := startProxy(t, f, &up, func(o *Options) { o.MaxConnsPerSandbox = 2 })
	get := "GET / HTTP/1.1\r\nHost: web.msb.test\r\n\r\n"
	for i := 0; i < 2; i++ { // two kept-alive connections hold both slots
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, get)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, get)
	if b, err := readAllBounded(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("third connection: %q, %v", b, err)
	}
	d := f.waitDecision(t, func(d netpolicy.Decision) bool { return !d.Allowed })
	if !strings.Contains(d.Reason, "too many connections") {
		t.Fatalf("decision %+v", d)
	}
}

// TestCloseEndsEverything: Close returns only after every goroutine of
// the proxy ended, whatever state its connections were in.
func TestCloseEndsEverything(t *testing.T) {
	pki := newPKI(t, "tls.msb.test")
	tlsUp := tlsUpstream(t, pki)
	httpUp := httpUpstream(t)
	f := newFake()
	f.allowName("tls.msb.test", tlsUp)
	f.allowName("web.msb.test", httpUp)
	runtime.GC()
	base := runtime.NumGoroutine()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := tlsUp
	p := New(Options{Decider: f, OriginalDst: func(c net.Conn) (netip.AddrPort, error) {
		return dst, nil
	}})
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// One silent connection (peeking), one live TLS connection.
	silent, _ := net.Dial("tcp", ln.Addr().String())
	clients = append(clients, silent)
	tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "tls.msb.test", RootCAs: pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, tc)
	p.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	waitGoroutines(t, base)
}
