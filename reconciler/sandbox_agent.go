package reconciler

import (
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

// agentUnresponsive has the agent of a running sandbox (observeRunning has
// set Ready=True) probed by the agent prober from now on and, when its
// last probe found it not answering, sets Ready=False AgentUnresponsive
// instead. It does no I/O: the prober probes off the reconcile path and
// requeues the sandbox when its verdict changes. A paused sandbox is not
// probed: its agent is frozen on purpose.
func (r *SandboxReconciler) agentUnresponsive(d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, state vmdriver.State) {
	if r.agents == nil {
		return
	}
	id := sb.Metadata.UID
	if state.Status != vmdriver.StatusRunning {
		r.agents.forget(id)
		return
	}
	ep, err := d.Endpoint(id)
	if err != nil {
		return
	}
	r.agents.track(id, v1alpha1.KeyOf(sb), ep.AgentSocket)
	was := cond(&sb.Status, v1alpha1.ConditionReady) == ReasonAgentUnresponsive
	err = r.agents.verdict(id)
	if err == nil {
		if was {
			r.event(sb, v1alpha1.EventNormal, ReasonAgentResponsive, "The sandbox's agent answers again")
		}
		return
	}
	msg := "the sandbox's agent does not answer, so exec and copy fail: " + err.Error()
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonAgentUnresponsive, msg)
	if !was {
		r.event(sb, v1alpha1.EventWarning, ReasonAgentUnresponsive, msg)
	}
}

// SuspectAgent is told (through Runtime) when a call to sb's agent timed
// out: its agent is probed at once, off the reconcile path, and the
// sandbox is requeued if the probe finds it unresponsive. Without a
// prober (no ProbeAgent) the sandbox is just reconciled again.
func (r *SandboxReconciler) SuspectAgent(sb *v1alpha1.Sandbox) {
	r.init()
	key := v1alpha1.KeyOf(sb)
	d, ok := r.Drivers.Get(sb.Status.Driver)
	if r.agents == nil || !ok {
		r.Requeue(key)
		return
	}
	ep, err := d.Endpoint(sb.Metadata.UID)
	if err != nil {
		r.Requeue(key)
		return
	}
	r.agents.suspect(sb.Metadata.UID, key, ep.AgentSocket)
}

// forgetAgent stops probing the agent of a sandbox that no longer runs.
func (r *SandboxReconciler) forgetAgent(id string) {
	if r.agents != nil {
		r.agents.forget(id)
	}
}
