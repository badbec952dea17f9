package reconciler

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// A running sandbox's agent is probed off the reconcile path: a reconcile
// does no probe, an exec that timed out (SuspectAgent) has it probed at
// once, and a verdict that changes requeues the sandbox. One whose agent
// does not answer is Ready=False AgentUnresponsive (one Warning event);
// once the agent answers again it is Ready, with a Normal event.
func TestSandboxAgentUnresponsive(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var probeErr error
	var probes atomic.Int32
	probed := make(chan string, 16)
	h.r.ProbeAgent = func(ctx context.Context, socket string) error {
		probes.Add(1)
		mu.Lock()
		defer mu.Unlock()
		probed <- socket
		return probeErr
	}
	h.r.AgentProbeInterval = time.Hour // only suspicion probes here
	sb := h.create("web", nil)
	h.mustReconcile("web")
	for range 3 {
		h.mustReconcile("web")
	}
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if n := probes.Load(); n != 0 {
		t.Fatalf("%d probes during reconciles; want none (probes run on their own timer)", n)
	}

	// An exec timed out: the agent is probed at once and, unresponsive,
	// the sandbox requeued.
	mu.Lock()
	probeErr = errors.New("AgentUnresponsive: no answer")
	mu.Unlock()
	before := h.requeueCount("web")
	h.r.SuspectAgent(h.get("web"))
	select {
	case s := <-probed:
		if s == "" {
			t.Fatal("probed an empty socket")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a suspected agent was not probed")
	}
	h.waitRequeued("web", before, "the requeue after an unresponsive verdict")
	for range 2 {
		h.mustReconcile("web")
	}
	got := h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonAgentUnresponsive)
	if n := h.eventCount("web", ReasonAgentUnresponsive); n != 1 {
		t.Errorf("AgentUnresponsive events: %d, want 1", n)
	}
	if b, _ := h.drv.Box(sb.Metadata.UID); b.Status != "running" {
		t.Errorf("the sandbox was touched: %s", b.Status)
	}

	// Unresponsive agents are rechecked soon by themselves; one that
	// answers again requeues the sandbox, which turns Ready.
	mu.Lock()
	probeErr = nil
	mu.Unlock()
	before = h.requeueCount("web")
	h.waitRequeued("web", before, "the requeue after the agent answered again")
	h.mustReconcile("web")
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if n := h.eventCount("web", ReasonAgentResponsive); n != 1 {
		t.Errorf("AgentResponsive events: %d, want 1", n)
	}
}

// The prober spreads probes over its interval and bounds them in flight.
func TestAgentProberSpreadsAndBounds(t *testing.T) {
	var inflight, peak atomic.Int32
	release := make(chan struct{})
	var count atomic.Int32
	p := newAgentProber(func(ctx context.Context, socket string) error {
		count.Add(1)
		n := inflight.Add(1)
		for {
			if old := peak.Load(); n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		inflight.Add(-1)
		return nil
	}, func(string) {}, 200*time.Millisecond, time.Second)
	for i := range 3 * maxAgentProbes {
		id := string(rune('a'+i%26)) + string(rune('a'+i/26))
		p.track(id, "Sandbox/default/"+id, "/x/"+id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for count.Load() < maxAgentProbes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // every agent is due by now
	if got := peak.Load(); got != maxAgentProbes {
		t.Errorf("peak probes in flight %d, want %d", got, maxAgentProbes)
	}
	close(release)
	deadline = time.Now().Add(10 * time.Second)
	for count.Load() < 3*maxAgentProbes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := count.Load(); got < 3*maxAgentProbes {
		t.Errorf("%d probes, want every one of %d agents probed", got, 3*maxAgentProbes)
	}
	cancel()
	<-done
}
