// Package dnsfilter is the DNS server every sandbox resolves through: it
// answers only what the sandbox's NetworkPolicies allow, pins every address
// it hands out to the name asked (so the egress proxy can tell a connection
// to a resolved name from one to an address the sandbox made up), and drops
// private addresses from public names (DNS rebinding).
//
// Per query, from the source address:
//
//	unknown source                 -> REFUSED
//	ANY                            -> NOTIMP;  AXFR/IXFR -> REFUSED
//	AAAA                           -> NOERROR, no records (IPv6 is off in sandboxes)
//	A, name a domain rule allows   -> forwarded; answer addresses that are public
//	                                  or covered by an IP rule, pinned to the name;
//	                                  none left: NXDOMAIN + EDE 15 (rebinding)
//	A, no domain rule              -> resolved only if the sandbox has IP rules;
//	                                  answered if every address is covered,
//	                                  else NXDOMAIN + EDE 15 (denied by policy)
//	other types, allowed name      -> forwarded, A/AAAA records and SVCB address
//	                                  hints stripped (nothing unpinned leaks)
//	other types, no domain rule    -> NXDOMAIN + EDE 15
//	a placeholder in the name      -> REFUSED + EDE 15 "msb: secret leak blocked",
//	                                  whatever the type; never forwarded
//
// EDE 15 ("Blocked", RFC 8914) rather than 17 ("Filtered"): 17 means the
// client asked to be filtered; here the operator's policy blocks. An EDE
// rides in the OPT record, so clients that send no EDNS (glibc's stub) get
// the bare NXDOMAIN; the decision log says why either way.
package dnsfilter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// Limits that keep one sandbox from starving the others.
const (
	// maxInflight is the queries one sandbox may have in progress; past
	// it a query gets SERVFAIL at once instead of a goroutine waiting.
	maxInflight = 64
	// maxTCPConnsPerSource and maxTCPConns bound open TCP connections.
	maxTCPConnsPerSource = 16
	maxTCPConns          = 1024
	// udpReadSize is the largest query read over UDP; longer datagrams are
	// cut short, fail to unpack and are dropped.
	udpReadSize = 1232
	// maxUDPAnswer caps what an EDNS client may ask us to send over UDP
	// (the DNS flag day 2020 size, safe from fragmentation).
	maxUDPAnswer = 1232
)

// Options configure a Filter.
type Options struct {
	// Decider decides and records; normally the *netpolicy.Engine.
	Decider netpolicy.Decider
	// Upstreams are the resolvers queries are forwarded to, "IP:port",
	// tried in order (see UpstreamsFromResolvConf).
	Upstreams []string
	// Timeout bounds each upstream query. Default 2s.
	Timeout time.Duration
	// CacheSize is how many upstream answers (per name and type) are
	// cached; 0 means 4096, negative disables the cache.
	CacheSize int
	// Log receives operational messages (never one per query). Default:
	// discarded.
	Log *slog.Logger

	// Secrets returns the substitution set of a sandbox (nil or empty:
	// none). A query whose name carries one of its placeholders, in any
	// form LeakInName knows (hex, base32, base64, split over labels), is
	// refused and never forwarded: a DNS name is a way out that needs no
	// connection at all.
	Secrets func(sandboxID string) *secretinject.Set
	// OnLeak is told of every such query (msbd raises a
	// SecretLeakBlocked Warning event); the Leak never holds a value.
	OnLeak func(sb netpolicy.Sandbox, leak *secretinject.Leak)
}

// Filter is the DNS filter. Create it with New; serve with Serve or
// ListenAndServe; stop with Shutdown.
type Filter struct {
	o     Options
	cache *cache

	// exchange sends a query upstream; tests and the fuzzer replace it.
	exchange func(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
	udp, tcp *dns.Client

	// ctx ends with Shutdown and cancels upstream queries in flight.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	inflight *netpolicy.Slots // queries in progress per sandbox ID
	closed   bool
	runs     []*run
}

// run is one dns.Server started by Serve.
type run struct {
	srv     *dns.Server
	started chan struct{}
	exited  chan struct{}
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("dnsfilter: filter shut down")

// New returns a Filter; it does nothing until served.
func New(o Options) *Filter {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	f := &Filter{
		o:        o,
		udp:      &dns.Client{Net: "udp", Timeout: o.Timeout, UDPSize: dns.MaxMsgSize},
		tcp:      &dns.Client{Net: "tcp", Timeout: o.Timeout},
		inflight: netpolicy.NewSlots(maxInflight),
	}
	if o.CacheSize >= 0 {
		f.cache = newCache(cmpOr(o.CacheSize, 4096))
	}
	f.exchange = f.forward
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// ListenAndServe listens on addr ("IP:port") over UDP and TCP and serves
// until Shutdown.
func (f *Filter) ListenAndServe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return err
	}
	return f.Serve(pc, l)
}

// Serve answers queries on udp and tcp (either may be nil) until Shutdown,
// then returns nil; or returns the first error either fails with, after
// stopping the other. It closes both.
func (f *Filter) Serve(udp net.PacketConn, tcp net.Listener) error {
	var runs []*run
	if udp != nil {
		runs = append(runs, f.newRun(&dns.Server{PacketConn: udp, UDPSize: udpReadSize}))
	}
	if tcp != nil {
		runs = append(runs, f.newRun(&dns.Server{Listener: newLimitListener(tcp), MaxTCPQueries: 128}))
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		if udp != nil {
			udp.Close()
		}
		if tcp != nil {
			tcp.Close()
		}
		return ErrClosed
	}
	f.runs = append(f.runs, runs...)
	f.mu.Unlock()

	errs := make(chan error, len(runs))
	for _, r := range runs {
		go func() {
			defer close(r.exited)
			errs <- r.srv.ActivateAndServe()
		}()
	}
	var first error
	for range runs {
		if err := <-errs; err != nil && first == nil {
			first = err
			f.stopRuns(context.Background(), runs) // the other one too
		}
	}
	return first
}

func (f *Filter) newRun(srv *dns.Server) *run {
	r := &run{srv: srv, started: make(chan struct{}), exited: make(chan struct{})}
	srv.Handler = f
	srv.NotifyStartedFunc = func() { close(r.started) }
	return r
}

// Shutdown stops serving: upstream queries in flight are cancelled and the
// servers wait (up to ctx) for their handlers to return.
func (f *Filter) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	runs := f.runs
	f.mu.Unlock()
	f.cancel()
	return f.stopRuns(ctx, runs)
}

func (f *Filter) stopRuns(ctx context.Context, runs []*run) error {
	var first error
	for _, r := range runs {
		select {
		case <-r.started:
			if err := r.srv.ShutdownContext(ctx); err != nil && first == nil && ctx.Err() != nil {
				first = err
			}
		case <-r.exited: // never started, or already stopped
		}
	}
	return first
}

// ServeDNS implements dns.Handler.
func (f *Filter) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	_, isUDP := w.RemoteAddr().(*net.UDPAddr)
	resp := f.handle(src, req)
	if resp == nil {
		return
	}
	size := dns.MaxMsgSize
	if isUDP {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPAnswer)
		}
	}
	resp.Truncate(size)
	if err := w.WriteMsg(resp); err != nil {
		f.o.Log.Debug("dns: writing answer", "src", src, "err", err)
	}
}

// handle answers req from src; nil means drop it.
func (f *Filter) handle(src netip.Addr, req *dns.Msg) *dns.Msg {
	if req.Response || len(req.Question) != 1 {
		return nil
	}
	if req.Opcode != dns.OpcodeQuery {
		return reply(req, dns.RcodeNotImplemented)
	}
	sb, ok := f.o.Decider.Sandbox(src)
	if !ok {
		return reply(req, dns.RcodeRefused)
	}
	if !f.inflight.Acquire(sb.ID) {
		return reply(req, dns.RcodeServerFailure)
	}
	defer f.inflight.Release(sb.ID)
	return f.answer(src, sb, req)
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
