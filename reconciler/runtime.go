package reconciler

import (
	"context"
	"errors"
	"fmt"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
	"msb.dev/msb/vmdriver"
)

// Runtime answers the API server's questions about running sandboxes (where
// a sandbox's agent and log are, which image layers are in use) from the
// driver each sandbox records in status.driver.
type Runtime struct {
	Drivers *vmdriver.Set
	// Engine keeps sandboxes' network decisions; nil without networking.
	Engine *netpolicy.Engine
	// Requeue, if set, has a sandbox reconciled again (see AgentUnresponsive).
	Requeue func(key string)
	// SuspectAgent, if set, has a sandbox's agent probed at once
	// (SandboxReconciler.SuspectAgent); else AgentUnresponsive requeues.
	SuspectAgent func(sb *v1alpha1.Sandbox)
}

// driverOf returns the endpoint of sb in the driver its status names, else
// (not started yet, or status written by an older msbd) in the driver its
// isolation chooses.
func (rt Runtime) driverOf(sb *v1alpha1.Sandbox) (vmdriver.Driver, vmdriver.Endpoint, error) {
	d, ok := rt.Drivers.Get(sb.Status.Driver)
	if !ok {
		var err error
		if d, err = rt.Drivers.Choose(string(sb.Spec.Isolation)); err != nil {
			return nil, vmdriver.Endpoint{}, err
		}
	}
	ep, err := d.Endpoint(sb.Metadata.UID)
	return d, ep, err
}

// AgentSocket returns the host socket of sb's agent, or why there is none.
func (rt Runtime) AgentSocket(sb *v1alpha1.Sandbox) (string, error) {
	if sb.Status.Phase != v1alpha1.PhaseRunning || sb.Status.PID == 0 {
		phase := string(sb.Status.Phase)
		if phase == "" {
			phase = string(v1alpha1.PhasePending)
		}
		return "", fmt.Errorf("sandbox %q is not running (phase %s); %s", sb.Metadata.Name, phase, notRunningHint(sb))
	}
	_, ep, err := rt.driverOf(sb)
	if err != nil {
		return "", err
	}
	return ep.AgentSocket, nil
}

// notRunningHint says what brings a sandbox that is not running to run: a
// wait only helps one that is on its way (Pending), never one that ended or
// was suspended.
func notRunningHint(sb *v1alpha1.Sandbox) string {
	name := sb.Metadata.Name
	switch sb.Status.Phase {
	case v1alpha1.PhaseSuspended:
		return fmt.Sprintf("it is suspended (spec.operatingMode: Suspended): resume it with 'msbctl resume %s'", name)
	case v1alpha1.PhaseFailed, v1alpha1.PhaseSucceeded:
		how := "its command has ended"
		if sb.Status.ExitCode != nil {
			how = fmt.Sprintf("its command exited with code %d", *sb.Status.ExitCode)
		}
		if c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Reason == "Expired" {
			how = "its lifecycle expired"
		}
		return fmt.Sprintf("%s and restartPolicy %s does not start it again: start a fresh run with 'msbctl restart %s' (see 'msbctl describe sandbox %s')", how, sb.Spec.RestartPolicy, name, name)
	}
	return fmt.Sprintf("wait for it with 'msbctl wait sandbox/%s --for=condition=Ready'", name)
}

// LogDir returns the host directory of sb's log.
func (rt Runtime) LogDir(sb *v1alpha1.Sandbox) (string, error) {
	if sb.Metadata.UID == "" {
		return "", errors.New("sandbox has no uid yet")
	}
	_, ep, err := rt.driverOf(sb)
	if err != nil {
		return "", err
	}
	return ep.LogDir, nil
}

// LayersInUse is the union of the layers every driver's sandboxes use; an
// image prune keeps them. A driver that cannot tell stops the prune.
func (rt Runtime) LayersInUse(ctx context.Context) (map[string]bool, error) {
	used := map[string]bool{}
	for _, d := range rt.Drivers.All() {
		lu, ok := d.(vmdriver.LayerUser)
		if !ok {
			return nil, fmt.Errorf("the %s driver cannot tell which image layers it uses; not pruning", d.Name())
		}
		m, err := lu.LayersInUse(ctx)
		if err != nil {
			return nil, err
		}
		for l := range m {
			used[l] = true
		}
	}
	return used, nil
}

// OOMKills counts the processes the memory limit's OOM killer ended in sb's
// workload, where its driver can tell (vmdriver.OOMCounter).
func (rt Runtime) OOMKills(sb *v1alpha1.Sandbox) (uint64, error) {
	d, _, err := rt.driverOf(sb)
	if err != nil {
		return 0, err
	}
	oc, ok := d.(vmdriver.OOMCounter)
	if !ok {
		return 0, fmt.Errorf("the %s driver cannot count OOM kills", d.Name())
	}
	return oc.OOMKills(sb.Metadata.UID)
}

// AgentUnresponsive is told by the API when a call to sb's agent timed
// out: its agent is probed at once, and a sandbox found unresponsive is
// reconciled to Ready=False AgentUnresponsive, rather than after the next
// periodic probe.
func (rt Runtime) AgentUnresponsive(sb *v1alpha1.Sandbox) {
	if rt.SuspectAgent != nil {
		rt.SuspectAgent(sb)
		return
	}
	if rt.Requeue != nil {
		rt.Requeue(v1alpha1.KeyOf(sb))
	}
}

// Stats reads a running sandbox's resource use and limits from its driver.
func (rt Runtime) Stats(sb *v1alpha1.Sandbox) (v1alpha1.SandboxStats, error) {
	if sb.Status.Phase != v1alpha1.PhaseRunning || sb.Status.PID == 0 {
		phase := string(sb.Status.Phase)
		if phase == "" {
			phase = string(v1alpha1.PhasePending)
		}
		return v1alpha1.SandboxStats{}, fmt.Errorf("sandbox %q is not running (phase %s); %s", sb.Metadata.Name, phase, notRunningHint(sb))
	}
	d, _, err := rt.driverOf(sb)
	if err != nil {
		return v1alpha1.SandboxStats{}, err
	}
	sr, ok := d.(vmdriver.StatsReader)
	if !ok {
		return v1alpha1.SandboxStats{}, fmt.Errorf("the %s driver cannot read resource use", d.Name())
	}
	return sr.Stats(sb.Metadata.UID)
}
