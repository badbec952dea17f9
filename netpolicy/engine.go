package netpolicy

import (
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// EngineOptions configure an Engine. The zero value is usable.
type EngineOptions struct {
	// PinFloor is the shortest life of a pin: a pin lasts max(ttl,
	// PinFloor), so a client that caches an answer a little longer than
	// its TTL (or a TTL of 0) still connects. Default 60s.
	PinFloor time.Duration
	// MaxPinNames bounds the names pinned per sandbox; past it the name
	// pinned longest ago is evicted, so a sandbox resolving endless
	// distinct names cannot grow msbd's memory. Default 4096.
	MaxPinNames int
	// LogSize is how many decisions each sandbox's log keeps (a ring).
	// Default 1000.
	LogSize int
	// OnDecision, if set, sees every recorded decision (metrics). It runs
	// on the decider's goroutine, outside the Engine's locks: it must be
	// quick and must not block.
	OnDecision func(Decision)
	// OnDeny, if set, sees denials rate-limited: at most once per
	// (sandbox, reason, name) per DenyInterval, with the number of such
	// denials suppressed since it was last called for that key. msbd
	// turns these into Warning Events on sb. Same rules as OnDecision.
	OnDeny func(sb Sandbox, d Decision, suppressed int)
	// DenyInterval is OnDeny's interval. Default 1 minute.
	DenyInterval time.Duration
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// Engine decides for every sandbox on the host: it implements Decider, and
// keeps the pins and decision logs. It is safe for concurrent use. The hot
// path (AllowConn, AllowName, IPRuleCovers) takes only read locks and reads
// each sandbox's compiled rules through an atomic pointer, so a policy
// change (SetSandbox) never waits for deciders and applies to the next
// decision.
type Engine struct {
	opts EngineOptions

	mu   sync.RWMutex
	byIP map[netip.Addr]*sandboxState
	byID map[string]*sandboxState
	// lastGen is the last rules generation handed out (under mu). One
	// counter for all sandboxes, so a generation is never reused: a
	// sandbox removed and set again under the same ID does not get back
	// a generation a connection of its earlier life remembers.
	lastGen uint64

	// changed is closed (and replaced) whenever a sandbox's rules change:
	// see RulesChanged.
	chMu    sync.Mutex
	changed chan struct{}

	// host is the "host" group: a set replaced whole by SetHostAddrs.
	host atomic.Pointer[map[netip.Addr]struct{}]
}

var _ Decider = (*Engine)(nil)

// sandboxState is everything the Engine holds for one sandbox.
type sandboxState struct {
	rules atomic.Pointer[compiled]
	pins  *pinTable
	log   *decisionLog
	// gen is the sandbox's rules generation (under Engine.mu): it changes
	// only when what decides for the sandbox changes (see SetSandbox).
	gen uint64
}

// NewEngine returns an Engine with no sandboxes.
func NewEngine(opts EngineOptions) *Engine {
	if opts.PinFloor <= 0 {
		opts.PinFloor = 60 * time.Second
	}
	if opts.MaxPinNames <= 0 {
		opts.MaxPinNames = 4096
	}
	if opts.LogSize <= 0 {
		opts.LogSize = 1000
	}
	if opts.DenyInterval <= 0 {
		opts.DenyInterval = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Engine{
		opts: opts,
		byIP: make(map[netip.Addr]*sandboxState),
		byID: make(map[string]*sandboxState),

		changed: make(chan struct{}),
	}
	e.host.Store(&map[netip.Addr]struct{}{})
	return e
}

// SetSandbox adds sb or replaces what the Engine knows of it (by ID): its
// rules are swapped atomically; its pins and decision log are kept (a pin
// admits nothing on its own, a domain rule must still allow the name). If
// another sandbox held sb.IP, sb takes the address over.
//
// The reconciler calls SetSandbox on every reconcile of a running sandbox,
// mostly with the rules it already has. So the sandbox's rules generation
// moves on only when the rules really changed — compared as a set (see
// compiled.key: order, duplicates and port order don't count) together
// with the address — and only then are watchers told (RulesChanged): the
// proxy re-decides open connections on a change, and must leave them alone
// on a resync that changed nothing.
func (e *Engine) SetSandbox(sb Sandbox) {
	c := compile(sb)
	e.mu.Lock()
	changed := false
	st, ok := e.byID[sb.ID]
	if !ok {
		st = &sandboxState{
			pins: newPinTable(e.opts.MaxPinNames),
			log:  newDecisionLog(e.opts.LogSize),
		}
		e.byID[sb.ID] = st
		e.bump(st)
		changed = true
	}
	old := st.rules.Load()
	if old != nil && old.key != c.key {
		e.bump(st)
		changed = true
	}
	if old != nil && old.sb.IP != c.sb.IP && e.byIP[old.sb.IP] == st {
		delete(e.byIP, old.sb.IP)
	}
	st.rules.Store(c)
	if c.sb.IP.IsValid() {
		if prev := e.byIP[c.sb.IP]; prev != nil && prev != st {
			// The other sandbox's connections from this address are
			// now decided by sb's rules: a change for it too.
			e.bump(prev)
			changed = true
		}
		e.byIP[c.sb.IP] = st
	}
	e.mu.Unlock()
	if changed {
		e.notify()
	}
}

// bump gives st a new rules generation. e.mu must be held.
func (e *Engine) bump(st *sandboxState) {
	e.lastGen++
	st.gen = e.lastGen
}

// notify wakes everyone waiting on RulesChanged.
func (e *Engine) notify() {
	e.chMu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.chMu.Unlock()
}

// Generation returns sandbox id's rules generation: a number that changes
// whenever the rules deciding for the sandbox change, and only then. It is
// 0 for a sandbox the Engine does not know (never set, or removed), and
// never 0 otherwise, so removal is a change too. A connection admitted
// under generation g needs deciding again once Generation is no longer g.
// It costs a read lock and a map lookup.
func (e *Engine) Generation(id string) uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if st := e.byID[id]; st != nil {
		return st.gen
	}
	return 0
}

// RulesChanged returns a channel closed at the next change of any
// sandbox's rules (a Generation moving on, RemoveSandbox included). To miss
// nothing, take the channel first, then read the generations, then wait.
func (e *Engine) RulesChanged() <-chan struct{} {
	e.chMu.Lock()
	defer e.chMu.Unlock()
	return e.changed
}

// RemoveSandbox forgets sandbox id: rules, pins and decision log. Its
// followers' channels are closed. It counts as a rules change: Generation
// returns 0 from now on and RulesChanged fires, so the proxy closes what
// the sandbox still had open.
func (e *Engine) RemoveSandbox(id string) {
	e.mu.Lock()
	st, ok := e.byID[id]
	if ok {
		delete(e.byID, id)
		if ip := st.rules.Load().sb.IP; e.byIP[ip] == st {
			delete(e.byIP, ip)
		}
	}
	e.mu.Unlock()
	if ok {
		st.log.close()
		e.notify()
	}
}

// SetHostAddrs replaces the "host" group: the addresses of msbd's own
// network namespace. Host addresses are admitted only by the host group or
// by a CIDR rule naming exactly that address — never by public, private or
// a wider CIDR — because the proxy dials from that namespace, where they
// reach msbd's own host services.
func (e *Engine) SetHostAddrs(addrs []netip.Addr) {
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = struct{}{}
	}
	e.host.Store(&m)
}

func (e *Engine) isHost(addr netip.Addr) bool {
	_, ok := (*e.host.Load())[addr]
	return ok
}

// lookup returns the compiled rules and state of the sandbox at src.
func (e *Engine) lookup(src netip.Addr) (*sandboxState, *compiled) {
	e.mu.RLock()
	st := e.byIP[src.Unmap()]
	e.mu.RUnlock()
	if st == nil {
		return nil, nil
	}
	return st, st.rules.Load()
}

// Sandbox implements Decider. The returned Rules must not be modified.
func (e *Engine) Sandbox(src netip.Addr) (Sandbox, bool) {
	_, c := e.lookup(src)
	if c == nil {
		return Sandbox{}, false
	}
	return c.sb, true
}

const reasonUnknownSource = "unknown source address"

// AllowName implements Decider. It only decides: the caller records what
// it acts on (Record), so one DNS answer makes one log entry.
func (e *Engine) AllowName(src netip.Addr, name string, port uint16) Decision {
	d := Decision{Time: e.opts.Now(), Kind: KindDNS, Name: NormalizeName(name), Port: port}
	if port != 0 {
		d.Kind = KindTCP
	}
	_, c := e.lookup(src)
	if c == nil {
		d.Reason = reasonUnknownSource
		return d
	}
	d.Sandbox = c.sb.ID
	if r := c.matchName(d.Name, port); r != nil {
		d.Allowed, d.Rule = true, r.desc
		return d
	}
	if port == 0 {
		d.Reason = "no policy allows this name"
	} else {
		d.Reason = "no policy allows this name on port " + strconv.Itoa(int(port))
	}
	return d
}

// AllowConn implements Decider. Like AllowName it only decides. Beyond the
// contract it refuses destinations no proxy should dial whatever the rules
// say — loopback (the sandbox's own never reaches the proxy; msbd's would be
// the host's), unspecified and multicast — and, on the domain path, an
// address that is not public unless an IP rule covers it, so a pin left from
// an older policy cannot reopen a private address (rebinding protection at
// connect time, matching the DNS filter's).
func (e *Engine) AllowConn(src netip.Addr, name string, dst netip.AddrPort) Decision {
	now := e.opts.Now()
	return e.allowConn(now, src, name, dst, now)
}

// Recheck decides again, under the sandbox's current rules, for a
// connection AllowConn admitted at admitted (the Time of that Decision),
// when its rules generation has changed. It is AllowConn except for the
// pin: a pin is only checked when a connection starts, and a connection
// open longer than the pin lives (60s floor) would otherwise be cut by any
// change of its sandbox's rules — even one that still allows it. So the
// pin counts if it had not expired at admission (a pin's expiry only ever
// moves later). A domain rule of the current rules must still allow the
// name on the port: a pin never admits on its own, and one left from
// older rules reopens nothing.
func (e *Engine) Recheck(src netip.Addr, name string, dst netip.AddrPort, admitted time.Time) Decision {
	now := e.opts.Now()
	if admitted.IsZero() || admitted.After(now) {
		admitted = now
	}
	return e.allowConn(now, src, name, dst, admitted)
}

// allowConn is AllowConn deciding at now, with the pin of name to dst
// checked as of pinAt.
func (e *Engine) allowConn(now time.Time, src netip.Addr, name string, dst netip.AddrPort, pinAt time.Time) Decision {
	addr := dst.Addr().Unmap()
	d := Decision{Time: now, Kind: KindTCP, Name: NormalizeName(name), Addr: addr, Port: dst.Port()}
	st, c := e.lookup(src)
	if c == nil {
		d.Reason = reasonUnknownSource
		return d
	}
	d.Sandbox = c.sb.ID
	cls := Classify(addr)
	if cls == GroupLoopback || addr.IsUnspecified() || addr.IsMulticast() {
		d.Reason = "destination is never proxied (loopback, unspecified or multicast)"
		return d
	}
	isHost := e.isHost(addr)
	reason := ""
	if d.Name != "" {
		if r := c.matchName(d.Name, d.Port); r != nil {
			switch {
			case !st.pins.has(d.Name, addr, pinAt):
				reason = "address not pinned to name"
			case (cls != GroupPublic || isHost) && c.matchIP(addr, 0, cls, isHost) == nil:
				reason = "address pinned to name is not public and no IP rule covers it"
			default:
				d.Allowed, d.Rule = true, r.desc
				return d
			}
		} else {
			reason = "no policy allows this name on port " + strconv.Itoa(int(d.Port))
		}
	}
	if r := c.matchIP(addr, d.Port, cls, isHost); r != nil {
		d.Allowed, d.Rule, d.Reason = true, r.desc, ""
		return d
	}
	if reason == "" {
		reason = "no policy allows this address on port " + strconv.Itoa(int(d.Port))
	}
	d.Reason = reason
	return d
}

// IPRuleCovers implements Decider.
func (e *Engine) IPRuleCovers(src, addr netip.Addr) bool {
	_, c := e.lookup(src)
	if c == nil {
		return false
	}
	addr = addr.Unmap()
	return c.matchIP(addr, 0, Classify(addr), e.isHost(addr)) != nil
}

// Pin implements Decider: addr is valid for name until max(ttl, PinFloor)
// from now.
func (e *Engine) Pin(src netip.Addr, name string, addr netip.Addr, ttl time.Duration) {
	st, c := e.lookup(src)
	if c == nil {
		return
	}
	ttl = max(ttl, e.opts.PinFloor)
	st.pins.pin(NormalizeName(name), addr.Unmap(), e.opts.Now().Add(ttl))
}

// Pinned reports whether the DNS filter handed src addr for name and the pin
// has not expired (the proxy's PinChecker): intercepting TLS for a Secret's
// host needs the destination to be the one the name resolved to, whatever
// IP rules would also admit.
func (e *Engine) Pinned(src netip.Addr, name string, addr netip.Addr) bool {
	st, c := e.lookup(src)
	if c == nil {
		return false
	}
	return st.pins.has(NormalizeName(name), addr.Unmap(), e.opts.Now())
}
