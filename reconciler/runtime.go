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
		return "", fmt.Errorf("sandbox %q is not running (phase %s); wait for it with 'msbctl wait sandbox/%s --for=condition=Ready'", sb.Metadata.Name, phase, sb.Metadata.Name)
	}
	_, ep, err := rt.driverOf(sb)
	if err != nil {
		return "", err
	}
	return ep.AgentSocket, nil
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
