package netpolicy

import (
	"context"
	"sync"
	"time"
)

// followBuffer is how many decisions a follower may lag behind before new
// ones are dropped for it: deciders never wait for a reader.
const followBuffer = 256

// maxDenyKeys bounds the (reason, name) pairs the OnDeny limiter tracks per
// sandbox. Past it, a denial for a new pair is not reported until tracked
// pairs age out: a sandbox cycling through endless made-up names cannot
// turn into endless Events.
const maxDenyKeys = 256

// decisionLog is one sandbox's bounded log: a ring of the last decisions,
// the followers receiving new ones, and the OnDeny limiter's state.
type decisionLog struct {
	mu sync.Mutex
	// ring grows up to size as decisions come, then wraps: most sandboxes
	// of a dense host are idle, and a ring allocated whole up front (150
	// KiB at the default size) was most of msbd's memory per sandbox.
	ring      []Decision
	size      int
	next      int // where the next decision goes, once the ring is full (len(ring) == size)
	followers map[chan Decision]struct{}
	closed    bool
	done      chan struct{} // closed with the log
	denies    map[denyKey]*denyState
}

type denyKey struct{ reason, name string }

type denyState struct {
	last       time.Time // when OnDeny was last called for the key
	suppressed int       // denials since then not reported
}

func newDecisionLog(size int) *decisionLog {
	return &decisionLog{
		size:      size,
		followers: make(map[chan Decision]struct{}),
		done:      make(chan struct{}),
		denies:    make(map[denyKey]*denyState),
	}
}

// Record implements Decider: d goes to the log of sandbox d.Sandbox (by
// ID; decisions for unknown sandboxes are dropped), to its followers, to
// OnDecision and, for denials, to the rate-limited OnDeny. A zero d.Time is
// set to now.
func (e *Engine) Record(d Decision) {
	e.mu.RLock()
	st := e.byID[d.Sandbox]
	e.mu.RUnlock()
	if st == nil {
		return
	}
	if d.Time.IsZero() {
		d.Time = e.opts.Now()
	}
	report, suppressed := st.log.add(d, e.opts.OnDeny != nil, e.opts.DenyInterval)
	if e.opts.OnDecision != nil {
		e.opts.OnDecision(d)
	}
	if report {
		var sb Sandbox
		if c := st.rules.Load(); c != nil {
			sb = c.sb
		}
		e.opts.OnDeny(sb, d, suppressed)
	}
}

// Decisions returns sandbox id's logged decisions, oldest first (nil for
// an unknown sandbox).
func (e *Engine) Decisions(id string) []Decision {
	e.mu.RLock()
	st := e.byID[id]
	e.mu.RUnlock()
	if st == nil {
		return nil
	}
	return st.log.snapshot()
}

// Follow returns a channel of sandbox id's decisions from now on. It is
// closed when ctx ends or the sandbox is removed; for an unknown sandbox it
// is closed at once. A follower that falls followBuffer decisions behind
// misses the ones that do not fit.
func (e *Engine) Follow(ctx context.Context, id string) <-chan Decision {
	e.mu.RLock()
	st := e.byID[id]
	e.mu.RUnlock()
	ch := make(chan Decision, followBuffer)
	if st == nil || !st.log.follow(ch) {
		close(ch)
		return ch
	}
	go func() {
		select {
		case <-ctx.Done():
			st.log.unfollow(ch)
		case <-st.log.done:
		}
	}()
	return ch
}

// add appends d, hands it to followers and says whether OnDeny is due for
// it (and how many denials of its key were suppressed since).
func (l *decisionLog) add(d Decision, limitDenies bool, interval time.Duration) (report bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, 0
	}
	if len(l.ring) < l.size {
		l.ring = append(l.ring, d)
	} else {
		l.ring[l.next] = d
		l.next = (l.next + 1) % l.size
	}
	for ch := range l.followers {
		select {
		case ch <- d:
		default: // slow follower: drop
		}
	}
	if d.Allowed || !limitDenies {
		return false, 0
	}
	k := denyKey{d.Reason, d.Name}
	s, ok := l.denies[k]
	if !ok {
		if len(l.denies) >= maxDenyKeys {
			for k2, s2 := range l.denies {
				if d.Time.Sub(s2.last) >= interval {
					delete(l.denies, k2)
				}
			}
			if len(l.denies) >= maxDenyKeys {
				return false, 0
			}
		}
		l.denies[k] = &denyState{last: d.Time}
		return true, 0
	}
	if d.Time.Sub(s.last) < interval {
		s.suppressed++
		return false, 0
	}
	suppressed = s.suppressed
	s.last, s.suppressed = d.Time, 0
	return true, suppressed
}

func (l *decisionLog) snapshot() []Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < l.size {
		return append([]Decision(nil), l.ring...)
	}
	out := make([]Decision, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

func (l *decisionLog) follow(ch chan Decision) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.followers[ch] = struct{}{}
	return true
}

func (l *decisionLog) unfollow(ch chan Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.followers[ch]; ok {
		delete(l.followers, ch)
		close(ch)
	}
}

// close ends every follower; later decisions are dropped.
func (l *decisionLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for ch := range l.followers {
		close(ch)
	}
	clear(l.followers)
	close(l.done)
}
