package reconciler

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// agentProbeInterval is how often the agent of each running sandbox is
// probed when nothing suggests it stopped answering. Probes are spread
// over the interval (a thousand sandboxes: about eight a second), and an
// exec or copy that times out has its agent probed at once (SuspectAgent).
const agentProbeInterval = 2 * time.Minute

// agentProbeTick is the prober's shortest sleep: probes that fall due
// within it start together, so the agents' table is scanned at most this
// often however many sandboxes run.
const agentProbeTick = time.Second

// maxAgentProbes bounds the probes in flight: a probe of a frozen agent
// waits agent.CallTimeout, and many frozen at once must not pile up
// goroutines and connections.
const maxAgentProbes = 16

// agentProber probes the agents of running sandboxes on its own timer, off
// the reconcile path: a resync of a thousand sandboxes does no agent
// round trip, and a frozen agent holds one probe goroutine for the probe's
// deadline, never a reconcile worker. A reconcile reads the last verdict
// (verdict); a verdict that changes requeues the sandbox, whose reconcile
// then sets or clears Ready=False AgentUnresponsive.
type agentProber struct {
	probe    func(ctx context.Context, socket string) error
	requeue  func(key string)
	interval time.Duration
	recheck  time.Duration // how soon an unresponsive agent is probed again

	mu       sync.Mutex
	agents   map[string]*probedAgent // by sandbox uid
	inflight int
	wake     chan struct{}
}

type probedAgent struct {
	key, socket string
	err         error     // the last probe's verdict: nil when it answered (or none yet)
	next        time.Time // when it is probed next
	probing     bool
}

func newAgentProber(probe func(ctx context.Context, socket string) error, requeue func(string), interval, recheck time.Duration) *agentProber {
	return &agentProber{probe: probe, requeue: requeue, interval: interval, recheck: recheck,
		agents: map[string]*probedAgent{}, wake: make(chan struct{}, 1)}
}

// track has uid's agent (at socket) probed from now on, first at a random
// point of the interval so that sandboxes adopted together (a msbd restart)
// are not probed together.
func (p *agentProber) track(uid, key, socket string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trackLocked(uid, key, socket)
}

func (p *agentProber) trackLocked(uid, key, socket string) *probedAgent {
	if a := p.agents[uid]; a != nil {
		if a.socket != socket {
			a.socket, a.err = socket, nil
		}
		a.key = key
		return a
	}
	a := &probedAgent{key: key, socket: socket, next: time.Now().Add(rand.N(p.interval) + time.Second)}
	p.agents[uid] = a
	return a
}

// forget stops probing uid's agent (its sandbox stopped or is gone).
func (p *agentProber) forget(uid string) {
	p.mu.Lock()
	delete(p.agents, uid)
	p.mu.Unlock()
}

// suspect has uid's agent probed now: a call to it timed out.
func (p *agentProber) suspect(uid, key, socket string) {
	p.mu.Lock()
	p.trackLocked(uid, key, socket).next = time.Now()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// verdict is the last probe's error for uid's agent (nil: it answered,
// or it was not probed yet).
func (p *agentProber) verdict(uid string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.agents[uid]; a != nil {
		return a.err
	}
	return nil
}

// run probes agents as they fall due until ctx ends.
func (p *agentProber) run(ctx context.Context) {
	t := time.NewTimer(p.interval)
	defer t.Stop()
	var probes sync.WaitGroup
	defer probes.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
		t.Reset(p.startDue(ctx, &probes))
	}
}

// startDue starts the probes that are due (as many as maxAgentProbes
// allows) and returns how long until the next one is.
func (p *agentProber) startDue(ctx context.Context, probes *sync.WaitGroup) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	sleep := p.interval
	for uid, a := range p.agents {
		if a.probing {
			continue
		}
		if wait := a.next.Sub(now); wait > 0 {
			sleep = min(sleep, wait)
			continue
		}
		if p.inflight >= maxAgentProbes {
			continue // a probe that ends wakes the loop
		}
		a.probing = true
		p.inflight++
		probes.Add(1)
		go func() {
			defer probes.Done()
			p.probeOne(ctx, uid, a)
		}()
	}
	return max(sleep, agentProbeTick)
}

// probeOne probes a's agent and requeues its sandbox when the verdict
// changed.
func (p *agentProber) probeOne(ctx context.Context, uid string, a *probedAgent) {
	p.mu.Lock()
	socket := a.socket
	p.mu.Unlock()
	err := p.probe(ctx, socket)
	p.mu.Lock()
	full := p.inflight >= maxAgentProbes
	p.inflight--
	a.probing = false
	changed := (err == nil) != (a.err == nil)
	a.err = err
	a.next = time.Now().Add(p.interval)
	if err != nil {
		a.next = time.Now().Add(p.recheck)
	}
	key := a.key
	tracked := p.agents[uid] == a
	p.mu.Unlock()
	if ctx.Err() == nil && tracked {
		if err != nil || full {
			// The loop may sleep past an unresponsive agent's recheck,
			// or past agents left waiting for a free probe.
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		if changed {
			p.requeue(key)
		}
	}
}
