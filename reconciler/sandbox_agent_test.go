package reconciler

import (
	"context"
	"errors"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
)

// A running sandbox whose agent does not answer is Ready=False
// AgentUnresponsive (one Warning event) and looked at again soon; once the
// agent answers it is Ready again, with a Normal event.
func TestSandboxAgentUnresponsive(t *testing.T) {
	h := newHarness(t)
	var probeErr error
	probed := ""
	h.r.ProbeAgent = func(ctx context.Context, socket string) error { probed = socket; return probeErr }
	sb := h.create("web", nil)
	h.mustReconcile("web")
	h.mustReconcile("web")
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if probed == "" {
		t.Fatal("the agent of a running sandbox was not probed")
	}

	probeErr = errors.New("AgentUnresponsive: no answer")
	for range 2 {
		if res := h.mustReconcile("web"); res.RequeueAfter == 0 || res.RequeueAfter > agentRecheck {
			t.Errorf("RequeueAfter %v, want at most %v", res.RequeueAfter, agentRecheck)
		}
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

	probeErr = nil
	h.mustReconcile("web")
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if n := h.eventCount("web", ReasonAgentResponsive); n != 1 {
		t.Errorf("AgentResponsive events: %d, want 1", n)
	}
}
