// Package proxy is msbd's transparent egress proxy and its published ports.
//
// nftables redirects every TCP connection a sandbox opens to the proxy's
// listener in msbd's network namespace. The proxy learns the original
// destination (SO_ORIGINAL_DST), recognises the sandbox by source address,
// peeks at the first bytes for the name the connection claims (TLS SNI or
// the HTTP Host), asks the netpolicy.Decider whether that name may be
// reached at that address, records the decision, and then connects to the
// original address — never to a fresh resolution of the name, so DNS-to-IP
// pinning holds — and copies bytes both ways.
//
// TLS is spliced untouched, except to a host one of the sandbox's Secrets
// may be sent to: that TLS is terminated and re-encrypted so placeholders
// can be replaced by values (intercept.go, forward.go). Plain HTTP is
// relayed request by request so that every request on a kept-alive
// connection is checked, for its Host and for placeholders: see http.go
// and leak.go.
package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// Options configure a Proxy. Only Decider is required.
type Options struct {
	Decider netpolicy.Decider
	// Dial connects to the original destination; the default is a
	// net.Dialer bounded by DialTimeout. Tests dial loopback upstreams.
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	DialTimeout time.Duration // default 10s
	// PeekTimeout is how long the sandbox has to send the first bytes
	// (ClientHello, request head); default 10s.
	PeekTimeout time.Duration
	// IdleTimeout closes a connection idle in both directions this long;
	// default 10 minutes.
	IdleTimeout time.Duration
	// OriginalDst reads where the sandbox meant to connect; default
	// OriginalDst (SO_ORIGINAL_DST). Loopback tests have no NAT and
	// inject the upstream here.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// MaxConnsPerSandbox bounds a sandbox's open proxied connections;
	// beyond it new ones are refused and recorded. Default 512.
	MaxConnsPerSandbox int
	Log                *slog.Logger

	// Secrets returns the substitution set of a sandbox (nil or empty:
	// none). It is asked per request, not per connection, so a rotated
	// Secret applies to the next request on a kept-alive connection.
	// Without it nothing is intercepted and nothing is searched.
	Secrets func(sandboxID string) *secretinject.Set
	// CA signs the leaves presented to the sandbox for intercepted hosts.
	// Without it TLS is never intercepted (plain HTTP is still searched
	// for placeholders when Secrets is set).
	CA *secretinject.CA
	// UpstreamRoots verify the upstream of an intercepted connection
	// (secretinject.UpstreamRoots: system roots plus --upstream-ca); nil
	// means the system roots. Verification is never skipped.
	UpstreamRoots *x509.CertPool
	// OnLeak is told of every blocked leak (msbd raises a
	// SecretLeakBlocked Warning event). The Leak names Secret, key and
	// location, never the value. It runs on the connection's goroutine.
	OnLeak func(sb netpolicy.Sandbox, leak *secretinject.Leak, dst netip.AddrPort)
}

// Proxy is the transparent egress proxy. Serve may be called for several
// listeners (IPv4 and IPv6, say); Close ends them all.
type Proxy struct {
	o      Options
	ctx    context.Context // cancelled by Close: aborts dials in flight
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{} // client and upstream conns, closed by Close
	perSB  *netpolicy.Slots      // open connections per sandbox ID
	wg     sync.WaitGroup        // Serve loops, connection handlers, watchRules

	// rw is the Decider as a RulesWatcher (nil if it is not one): open
	// connections are re-decided when their sandbox's rules change
	// (watch.go).
	rw      RulesWatcher
	wmu     sync.Mutex
	watched map[*conn]struct{}
}

// New returns a Proxy with o's defaults filled in.
func New(o Options) *Proxy {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.PeekTimeout <= 0 {
		o.PeekTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.MaxConnsPerSandbox <= 0 {
		o.MaxConnsPerSandbox = 512
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.OriginalDst == nil {
		o.OriginalDst = func(c net.Conn) (netip.AddrPort, error) {
			tc, ok := c.(*net.TCPConn)
			if !ok {
				return netip.AddrPort{}, errors.New("not a TCP connection")
			}
			return OriginalDst(tc)
		}
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: o.DialTimeout}
		o.Dial = d.DialContext
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		o: o, ctx: ctx, cancel: cancel,
		lns:     map[net.Listener]struct{}{},
		conns:   map[net.Conn]struct{}{},
		perSB:   netpolicy.NewSlots(o.MaxConnsPerSandbox),
		watched: map[*conn]struct{}{},
	}
	if rw, ok := o.Decider.(RulesWatcher); ok {
		p.rw = rw
		p.wg.Add(1)
		go p.watchRules()
	}
	return p
}

// Serve accepts connections on ln until ln fails or Close is called; after
// Close it returns nil. Transient accept errors (out of file descriptors)
// are retried with a growing pause rather than ending the proxy.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.lns[ln] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.lns, ln)
		p.mu.Unlock()
		p.wg.Done()
	}()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.o.Log.Warn("egress proxy: accept", "err", err, "retry_in", pause)
			select {
			case <-time.After(pause):
				continue
			case <-p.ctx.Done():
				return nil
			}
		}
		pause = 0
		if !p.track(c, true) {
			c.Close()
			return nil
		}
		go p.handle(c)
	}
}

// Close stops every listener, closes every proxied connection, and returns
// once all of the proxy's goroutines have ended.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for ln := range p.lns {
		ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// track registers c so Close can close it; handler also counts a handler
// goroutine. It fails once the proxy is closed.
func (p *Proxy) track(c net.Conn, handler bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	if handler {
		p.wg.Add(1)
	}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// conn is one sandbox connection on its way through the proxy.
type conn struct {
	p   *Proxy
	sb  netpolicy.Sandbox
	src netip.Addr
	dst netip.AddrPort
	c   net.Conn      // the sandbox's side
	cr  *bufio.Reader // reads c; holds the peeked bytes
	up  net.Conn      // the upstream, once dialled
	w   watchState    // for rechecks when the rules change (watch.go)
}

func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return
	}
	src := ap.Addr().Unmap()
	sb, ok := p.o.Decider.Sandbox(src)
	if !ok {
		// Not a sandbox: nothing to record it under. nftables should
		// never send us such a connection.
		p.o.Log.Debug("egress proxy: connection from unknown source", "src", src)
		return
	}
	x := &conn{p: p, sb: sb, src: src, c: c}
	if x.dst, err = p.o.OriginalDst(c); err != nil {
		x.record(netpolicy.Decision{Reason: "original destination unknown: " + err.Error()})
		return
	}
	x.dst = netip.AddrPortFrom(x.dst.Addr().Unmap(), x.dst.Port())
	if !p.perSB.Acquire(sb.ID) {
		x.record(netpolicy.Decision{Reason: "too many connections (MaxConnsPerSandbox)"})
		return
	}
	defer p.perSB.Release(sb.ID)
	x.run()
}

// record completes d with what the proxy knows and keeps it in the log.
func (x *conn) record(d netpolicy.Decision) {
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	d.Sandbox, d.Kind = x.sb.ID, netpolicy.KindTCP
	if !d.Addr.IsValid() {
		d.Addr, d.Port = x.dst.Addr(), x.dst.Port()
	}
	x.p.o.Decider.Record(d)
}

// decide asks the Decider about name and records the answer.
func (x *conn) decide(name string) netpolicy.Decision {
	d := x.ask(name)
	x.record(d)
	return d
}

// ask is decide without the recording.
func (x *conn) ask(name string) netpolicy.Decision {
	d := x.p.o.Decider.AllowConn(x.src, name, x.dst)
	d.Name = name
	d.Addr, d.Port = x.dst.Addr(), x.dst.Port()
	return d
}

func (x *conn) run() {
	x.cr = bufio.NewReaderSize(x.c, maxHead)
	x.c.SetReadDeadline(time.Now().Add(x.p.o.PeekTimeout))
	s, err := sniff(x.cr)
	x.c.SetReadDeadline(time.Time{})
	gen := x.generation() // before deciding: see watch.go
	var d netpolicy.Decision
	intercept := false
	switch {
	case errors.Is(err, errNothingSent):
		// Server-speaks-first protocols (SMTP, MySQL) send nothing:
		// with no name to go by, only an IP rule can admit them.
		d = x.p.o.Decider.AllowConn(x.src, "", x.dst)
		if !d.Allowed {
			d.Reason = "sent nothing for PeekTimeout and no IP rule allows the address"
		}
		x.record(d)
	case errors.Is(err, errClosedEarly):
		return // neither admitted nor refused: nothing to record
	case err != nil:
		x.record(netpolicy.Decision{Name: s.name, Reason: err.Error()})
		if s.proto == protoHTTP {
			x.refuseHTTP(httpStatus(err), err.Error())
		}
		return
	default:
		d = x.ask(s.name)
		if d.Allowed && s.proto == protoTLS {
			intercept, d = x.interceptGate(s.name, d)
		}
		x.record(d)
	}
	if !d.Allowed {
		if s.proto == protoHTTP {
			x.refuseHTTP(403, "policy refuses "+quoteName(s.name)+": "+d.Reason)
		}
		if intercept {
			x.reset() // a TLS client gets no answer it could misread
		}
		return
	}
	if !x.dial() {
		return
	}
	defer x.p.untrack(x.up)
	defer x.p.watch(x, gen, s.name, admittedAt(d))()
	stop := x.p.watchIdle(x.c, x.p.o.IdleTimeout, func() { x.c.Close(); x.up.Close() })
	defer stop()
	if s.proto == protoHTTP {
		x.relayHTTP(s.head, s.headLen, gen, admittedAt(d))
		return
	}
	if intercept {
		x.intercept(s.name)
		return
	}
	if flush(x.up, x.cr) == nil {
		pipe(x.c, x.up)
	}
}

// dial connects to the original destination. On failure the sandbox's
// connection is reset, as a refused direct connection would be.
func (x *conn) dial() bool {
	ctx, cancel := context.WithTimeout(x.p.ctx, x.p.o.DialTimeout)
	defer cancel()
	up, err := x.p.o.Dial(ctx, "tcp", x.dst.String())
	if err != nil {
		x.p.o.Log.Debug("egress proxy: dial", "sandbox", x.sb.ID, "dst", x.dst, "err", err)
		x.reset()
		return false
	}
	if !x.p.track(up, false) {
		up.Close()
		return false
	}
	x.up = up
	return true
}

// reset makes the sandbox's connection end with a RST when it is closed,
// as a refused direct connection would.
func (x *conn) reset() {
	if tc, ok := x.c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

func quoteName(n string) string {
	if n == "" {
		return "a connection without a name"
	}
	return n
}

func errDecision(err error) netpolicy.Decision {
	return netpolicy.Decision{Reason: err.Error()}
}

func httpStatus(err error) int {
	if errors.Is(err, errHeadTooLarge) {
		return 431
	}
	return 400
}
