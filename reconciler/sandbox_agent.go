package reconciler

import (
	"context"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// ReasonAgentUnresponsive is Ready's reason (and a Warning event's) while a
// running sandbox's agent accepts connections but does not answer: it was
// stopped, starved or is being debugged, and execs fail until it answers.
const ReasonAgentUnresponsive = "AgentUnresponsive"

// ReasonAgentResponsive is the Normal event of an agent answering again.
const ReasonAgentResponsive = "AgentResponsive"

// agentRecheck is how soon an unresponsive agent is probed again, so Ready
// comes back soon after it does.
const agentRecheck = 2 * time.Second

// agentUnresponsive probes the agent of a running sandbox (observeRunning
// has set Ready=True) and, when it does not answer, sets Ready=False
// AgentUnresponsive instead. A paused sandbox is not probed: its agent is
// frozen on purpose.
func (r *SandboxReconciler) agentUnresponsive(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, state vmdriver.State) bool {
	if r.ProbeAgent == nil || state.Status != vmdriver.StatusRunning {
		return false
	}
	ep, err := d.Endpoint(sb.Metadata.UID)
	if err != nil {
		return false
	}
	was := cond(&sb.Status, v1alpha1.ConditionReady) == ReasonAgentUnresponsive
	err = r.ProbeAgent(ctx, ep.AgentSocket)
	if err == nil {
		if was {
			r.event(sb, v1alpha1.EventNormal, ReasonAgentResponsive, "The sandbox's agent answers again")
		}
		return false
	}
	msg := "the sandbox's agent does not answer, so exec and copy fail: " + err.Error()
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonAgentUnresponsive, msg)
	if !was {
		r.event(sb, v1alpha1.EventWarning, ReasonAgentUnresponsive, msg)
	}
	return true
}
