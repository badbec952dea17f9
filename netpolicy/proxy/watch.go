package proxy

import (
	"net/netip"
	"sync"
	"time"

	"msb.dev/msb/netpolicy"
)

// A connection is admitted once, when it starts; but a NetworkPolicy can be
// removed or narrowed while it is open. New connections and DNS see the new
// rules at once; open ones must too, or a connection admitted before stays
// useful for as long as the sandbox keeps it busy. So:
//
//   - The plain-HTTP relay notes the rules generation with its admissions
//     and, when the generation has moved on, forgets the hosts it admitted
//     and decides the next request afresh (http.go).
//   - Every other admitted connection — spliced TLS, intercepted TLS,
//     server-speaks-first and other name-less streams, and a plain-HTTP
//     connection while a response or a tunnel (WebSocket, CONNECT) is in
//     flight — is registered here. One goroutine per proxy sleeps until
//     the Decider says some sandbox's rules changed, then re-decides each
//     registered connection of that sandbox whose generation is stale,
//     with the name and destination it was admitted for, and closes both
//     sides of those now refused.
//
// A connection the new rules still allow is kept and nothing is recorded
// for it (a policy change must not flood the decision log with one entry
// per open connection); one refused is recorded as refused, its Reason
// prefixed "policy changed: ", so `msbctl logs --network` says why it was
// cut.
//
// Nothing of this runs per byte: copying stays on splice(2); the cost is a
// map insert per connection and a generation read per HTTP request. A
// resync that changes nothing does not move the generation (the Engine
// compares rules as sets), so it disturbs nothing.

// RulesWatcher is implemented by a Decider whose rules for a sandbox can
// change while its connections are open (netpolicy.Engine). A Decider
// without it is taken never to change its mind: admissions stand for the
// life of the connection.
type RulesWatcher interface {
	// Generation returns the sandbox's rules generation: it changes
	// whenever the rules deciding for the sandbox change (its removal
	// included), and only then.
	Generation(id string) uint64
	// RulesChanged returns a channel closed at the next change of any
	// sandbox's rules.
	RulesChanged() <-chan struct{}
}

// Rechecker is implemented by a Decider that can re-decide a connection it
// admitted at a given time without requiring the name's DNS pin to be
// still alive now (netpolicy.Engine.Recheck): pins live about a minute,
// connections much longer, and a change of rules that still allows a
// connection must not cut it. Without it, rechecks use AllowConn.
type Rechecker interface {
	Recheck(src netip.Addr, name string, dst netip.AddrPort, admitted time.Time) netpolicy.Decision
}

// watchState is what a recheck needs of one admitted connection.
type watchState struct {
	mu   sync.Mutex
	gen  uint64    // the generation its admission was decided under
	name string    // the name it was admitted for (HTTP: the Host in flight)
	at   time.Time // when that name was admitted
	// busy is false while the HTTP relay waits for the next request:
	// the relay rechecks that itself, and answers a refusal with a 403
	// rather than a bare close.
	busy bool
	dead bool // closed by a recheck
}

// generation is the sandbox's rules generation now (0 without a
// RulesWatcher). Read it before deciding, so that a change racing with the
// decision shows as a stale generation afterwards.
func (x *conn) generation() uint64 {
	if x.p.rw == nil {
		return 0
	}
	return x.p.rw.Generation(x.sb.ID)
}

// reask is ask for a connection admitted at admitted that needs deciding
// again because the rules changed.
func (x *conn) reask(name string, admitted time.Time) netpolicy.Decision {
	var d netpolicy.Decision
	if rc, ok := x.p.o.Decider.(Rechecker); ok {
		d = rc.Recheck(x.src, name, x.dst, admitted)
	} else {
		d = x.p.o.Decider.AllowConn(x.src, name, x.dst)
	}
	d.Name = name
	d.Addr, d.Port = x.dst.Addr(), x.dst.Port()
	return d
}

// admittedAt is when d was decided, for a later Recheck.
func admittedAt(d netpolicy.Decision) time.Time {
	if d.Time.IsZero() {
		return time.Now()
	}
	return d.Time
}

// arm says that x now carries traffic for name, admitted at at under
// generation gen, and rechecks at once if the generation has already moved
// on: a change between the decision and this call woke the watcher while
// x was not yet (or not busy) registered, and would otherwise go unseen.
func (x *conn) arm(gen uint64, name string, at time.Time) {
	if x.p.rw == nil {
		return
	}
	w := &x.w
	w.mu.Lock()
	w.gen, w.name, w.at, w.busy = gen, name, at, true
	w.mu.Unlock()
	if now := x.generation(); now != gen {
		x.recheck(now)
	}
}

// idle says that the HTTP relay is between requests (see watchState.busy).
func (x *conn) idle() {
	x.w.mu.Lock()
	x.w.busy = false
	x.w.mu.Unlock()
}

// recheck re-decides x under generation gen, unless it was already decided
// under it or is idle, and closes both sides if the rules now refuse it.
func (x *conn) recheck(gen uint64) {
	w := &x.w
	w.mu.Lock()
	if w.dead || !w.busy || w.gen == gen {
		w.mu.Unlock()
		return
	}
	name, at := w.name, w.at
	w.mu.Unlock()
	d := x.reask(name, at)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead || w.name != name || w.at != at {
		return // closed meanwhile, or a newer admission took its place
	}
	if d.Allowed {
		w.gen = gen
		return
	}
	w.dead = true
	d.Rule = ""
	d.Reason = "policy changed: " + d.Reason
	x.record(d)
	x.c.Close()
	if x.up != nil {
		x.up.Close()
	}
}

// watch registers x (admitted under gen for name at at, upstream dialled)
// for rechecks; the returned func unregisters it.
func (p *Proxy) watch(x *conn, gen uint64, name string, at time.Time) (unwatch func()) {
	if p.rw == nil {
		return func() {}
	}
	p.wmu.Lock()
	p.watched[x] = struct{}{}
	p.wmu.Unlock()
	x.arm(gen, name, at)
	return func() {
		p.wmu.Lock()
		delete(p.watched, x)
		p.wmu.Unlock()
	}
}

// watchRules is the proxy's one recheck goroutine: it runs until Close.
func (p *Proxy) watchRules() {
	defer p.wg.Done()
	for {
		changed := p.rw.RulesChanged() // before reading generations: miss nothing
		p.recheckAll()
		select {
		case <-changed:
		case <-p.ctx.Done():
			return
		}
	}
}

// recheckAll rechecks every registered connection whose sandbox's
// generation moved on. Generations are read once per sandbox.
func (p *Proxy) recheckAll() {
	p.wmu.Lock()
	conns := make([]*conn, 0, len(p.watched))
	for x := range p.watched {
		conns = append(conns, x)
	}
	p.wmu.Unlock()
	gens := map[string]uint64{}
	for _, x := range conns {
		g, ok := gens[x.sb.ID]
		if !ok {
			g = p.rw.Generation(x.sb.ID)
			gens[x.sb.ID] = g
		}
		x.recheck(g)
	}
}
