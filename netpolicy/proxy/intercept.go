package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// Interception, in the order it happens:
//
//  1. Gate (interceptGate): the policy admitted the SNI on this address,
//     a Secret of the sandbox may go to that name, and the address is
//     pinned to the name. A secret host reached on an address that is
//     not pinned is refused rather than spliced: the sandbox asked for
//     substitution, and an unpinned address is what fronting looks like.
//  2. Upstream first: TLS to the original destination, verified against
//     UpstreamRoots for the SNI. Nothing has been said to the sandbox yet,
//     so an upstream that fails verification just resets the sandbox's
//     connection; no request is ever read, so none can be sent.
//  3. Sandbox side: TLS with a leaf from msbd's CA, offering h2 only if
//     the upstream chose h2 (an h1 sandbox on an h2 upstream is
//     translated; the other way round would need a connection pool).
//  4. Requests: one http.Server on this one connection (it speaks h1 and,
//     through its bundled h2, h2 when the handshake chose it) hands each
//     request to forward (forward.go), which rewrites it and sends it on
//     an http.ClientConn bound to the one verified upstream connection.
//
// Why the standard library and not goproxy: the proxy is transparent, so
// there is no CONNECT to hijack; the connection is already accepted, its
// ClientHello already peeked and its destination already pinned. All that
// is needed is a server for one conn and a client for one conn, and Go
// 1.26's http.Server and Transport.NewClientConn are exactly that, for
// both protocols, with full control of the upstream dial and verification
// (goproxy would bring its own CA and dialling, which are what must not be
// used here).

// PinChecker is implemented by a Decider that can say whether the DNS
// filter handed src the address addr for name (an unexpired pin). The
// proxy intercepts TLS for a Secret's host only on a pinned address: a
// value is substituted only when SNI, Host and the pinned destination
// agree. A Decider without it is judged by what AllowConn says of the
// address alone (see conn.pinned).
type PinChecker interface {
	Pinned(src netip.Addr, name string, addr netip.Addr) bool
}

// interceptGate decides whether an admitted TLS connection to sni is
// intercepted. It returns the decision to record: d unchanged, or refused
// when a secret host is reached on an address not pinned to it.
func (x *conn) interceptGate(sni string, d netpolicy.Decision) (bool, netpolicy.Decision) {
	o := &x.p.o
	if o.Secrets == nil || o.CA == nil || sni == "" {
		return false, d
	}
	if !o.Secrets(x.sb.ID).NeedsIntercept(sni) {
		return false, d
	}
	if !x.pinned(sni) {
		d.Allowed, d.Rule = false, ""
		d.Reason = "a Secret may be sent to this name, but the address is not one msb's DNS handed out for it: not intercepted"
		return true, d
	}
	return true, d
}

// pinned reports whether x's destination is pinned to name. A Decider
// without PinChecker is asked about the address alone: if no IP rule
// admits it, the admission that already happened can only have come from
// a domain rule with the address pinned (the Engine's AllowConn). If an IP
// rule admits it, the pin cannot be told from here, and the answer is no.
func (x *conn) pinned(name string) bool {
	if pc, ok := x.p.o.Decider.(PinChecker); ok {
		return pc.Pinned(x.src, name, x.dst.Addr())
	}
	return !x.p.o.Decider.AllowConn(x.src, "", x.dst).Allowed
}

// intercepted is one terminated TLS connection and its upstream.
type intercepted struct {
	x   *conn
	sni string
	up  *http.ClientConn
	sc  *tls.Conn // the sandbox's side
	uc  *tls.Conn // the upstream's side

	mu       sync.Mutex
	closed   bool           // no new handlers: the connection is over
	handlers sync.WaitGroup // handlers running (h2 runs them concurrently)
}

// intercept serves the sandbox's TLS connection to sni, already admitted
// and dialled (x.up). It returns once every goroutine it started is done.
func (x *conn) intercept(sni string) {
	p := x.p
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()

	uc := tls.Client(x.up, secretinject.UpstreamConfig(sni, p.o.UpstreamRoots, nil))
	hctx, hcancel := context.WithTimeout(ctx, p.o.DialTimeout)
	err := uc.HandshakeContext(hctx)
	hcancel()
	if err != nil {
		x.record(netpolicy.Decision{Name: sni, Reason: "upstream TLS failed (not intercepted, nothing sent): " + err.Error()})
		x.reset()
		return
	}
	protos := []string{"http/1.1"}
	if uc.ConnectionState().NegotiatedProtocol == "h2" {
		protos = []string{"h2", "http/1.1"}
	}
	cfg := p.o.CA.ServerConfig()
	cfg.NextProtos = protos
	sc := tls.Server(&peekedConn{Conn: x.c, r: x.cr}, cfg)
	hctx, hcancel = context.WithTimeout(ctx, p.o.PeekTimeout)
	err = sc.HandshakeContext(hctx)
	hcancel()
	if err != nil {
		// Most likely the client does not trust msbd's CA: say so in
		// the log the user reads.
		x.record(netpolicy.Decision{Name: sni, Reason: "TLS with the sandbox failed (does it trust msb's CA?): " + err.Error()})
		return
	}

	var dialled bool
	tr := &http.Transport{
		// The one connection already verified; a second dial (there is
		// none: NewClientConn dials once) gets nothing.
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if dialled {
				return nil, errors.New("intercepted connection: upstream already used")
			}
			dialled = true
			return uc, nil
		},
		// Bodies pass as they are: no Accept-Encoding added, nothing
		// decompressed behind the sandbox's back.
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
		Protocols:              bothProtocols(),
	}
	cc, err := tr.NewClientConn(ctx, "https", x.dst.String())
	if err != nil {
		x.record(netpolicy.Decision{Name: sni, Reason: "upstream connection failed: " + err.Error()})
		return
	}
	ic := &intercepted{x: x, sni: sni, up: cc, sc: sc, uc: uc}
	ic.serve(ctx)
	cc.Close()
	ic.mu.Lock()
	ic.closed = true
	ic.mu.Unlock()
	x.c.Close()
	x.up.Close()
	ic.handlers.Wait()
}

func bothProtocols() *http.Protocols {
	var ps http.Protocols
	ps.SetHTTP1(true)
	ps.SetHTTP2(true)
	return &ps
}

// errorLog discards net/http's own complaints (a client that hangs up,
// a malformed request): the decision log says what matters.
var errorLog = log.New(io.Discard, "", 0)

// serve runs an http.Server on the sandbox's one connection until it
// closes.
func (ic *intercepted) serve(ctx context.Context) {
	ln := &oneConnListener{c: ic.sc, done: make(chan struct{})}
	srv := &http.Server{
		Handler:           ic,
		ReadHeaderTimeout: ic.x.p.o.PeekTimeout,
		IdleTimeout:       ic.x.p.o.IdleTimeout,
		MaxHeaderBytes:    maxHead,
		ErrorLog:          errorLog,
		Protocols:         bothProtocols(),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ln.finish()
			}
		},
	}
	srv.Serve(ln) // returns once the connection has closed
}

// begin registers a handler; false once the connection is over.
func (ic *intercepted) begin() bool {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.closed {
		return false
	}
	ic.handlers.Add(1)
	return true
}

// kill ends the whole connection, both sides, at once: after a leak, or
// once the upstream is gone.
func (ic *intercepted) kill() {
	ic.x.c.Close()
	ic.x.up.Close()
}

// peekedConn is the sandbox's connection with the bytes already peeked
// (the ClientHello) read again first.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// oneConnListener hands out one connection, then blocks until that
// connection has closed, then fails: http.Server.Serve on it serves
// exactly that connection and returns when it is done.
type oneConnListener struct {
	mu   sync.Mutex
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) finish()        { l.once.Do(func() { close(l.done) }) }
func (l *oneConnListener) Close() error   { l.finish(); return nil }
func (l *oneConnListener) Addr() net.Addr { return dummyAddr{} }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "tcp" }
func (dummyAddr) String() string  { return "msb-intercept" }
