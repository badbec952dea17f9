package reconciler

import (
	"context"
	"errors"
	"fmt"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// driverFor returns the driver sb runs in: the one its status records while
// that still gives the isolation the spec asks for, else the one Drivers
// chooses. A sandbox whose spec moved it to another isolation is torn down
// in its old driver first. When nothing here gives the isolation asked for,
// the sandbox stays Pending with the reason (MicroVMUnavailable): a host
// that gains KVM and libkrun starts it after msbd restarts.
func (r *SandboxReconciler) driverFor(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) (vmdriver.Driver, error) {
	iso := string(sb.Spec.Isolation)
	fits := func(d vmdriver.Driver) bool {
		return iso == "" || iso == vmdriver.IsolationAuto || d.Isolation() == iso
	}
	if rec, ok := r.Drivers.Get(st.Driver); ok {
		if fits(rec) {
			return rec, nil
		}
		if err := r.teardown(ctx, sb, "its isolation changed to "+iso); err != nil {
			return nil, err
		}
		st.Driver, st.SpecHash, st.PID, st.RestartCount, st.Phase = "", "", 0, 0, v1alpha1.PhasePending
	} else if st.Driver != "" {
		msg := fmt.Sprintf("the sandbox runs in driver %q, which this msbd does not have; start msbd where it is available, or delete the sandbox", st.Driver)
		r.unavailable(sb, st, ReasonDriverUnavailable, msg)
		return nil, Terminal(errors.New(msg))
	}
	d, err := r.Drivers.Choose(iso)
	if err != nil {
		reason, msg := ReasonIsolation, err.Error()
		if iso == vmdriver.IsolationMicroVM {
			reason, msg = ReasonMicroVMUnavailable, msg+"; use isolation: auto or container to run it in a container"
		}
		r.unavailable(sb, st, reason, msg)
		return nil, Terminal(errors.New(msg))
	}
	if st.Driver == "" && len(r.Drivers.All()) > 1 {
		// No driver recorded (msbd died before writing status): adopt the
		// sandbox where it already is.
		for _, o := range r.Drivers.All() {
			if _, err := o.State(ctx, sb.Metadata.UID); o != d && err == nil && fits(o) {
				return o, nil
			}
		}
	}
	return d, nil
}

// unavailable records that sb cannot run here for reason: Pending, not
// Ready, and one Warning event per change of reason.
func (r *SandboxReconciler) unavailable(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, reason, msg string) {
	if cond(st, v1alpha1.ConditionReady) != reason {
		r.event(sb, v1alpha1.EventWarning, reason, msg)
	}
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, reason, msg)
	st.Phase = v1alpha1.PhasePending
}
