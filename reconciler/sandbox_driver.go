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
// chooses.
//
// A sandbox whose spec asks for another isolation never goes on running with
// the one it has: it stops at once. Its writable layer and logs are removed
// from the old driver only once a new driver takes it; while none here gives
// the isolation asked for, it waits Pending with the reason
// (MicroVMUnavailable) and keeps them, so going back loses nothing. A host
// that gains KVM and libkrun starts it after msbd restarts.
func (r *SandboxReconciler) driverFor(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) (vmdriver.Driver, error) {
	iso := string(sb.Spec.Isolation)
	explicit := iso != "" && iso != vmdriver.IsolationAuto
	fits := func(d vmdriver.Driver) bool { return !explicit || d.Isolation() == iso }
	rec, recOK := r.Drivers.Get(st.Driver)
	if recOK && fits(rec) {
		return rec, nil
	}
	d, chooseErr := r.Drivers.Choose(iso)

	switch {
	case recOK: // the spec moved it to another isolation
		why := "its isolation changed to " + iso
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonUpdating, "stopping: "+why)
		if chooseErr != nil {
			if err := r.stopKeeping(ctx, rec, sb, why); err != nil {
				return nil, err
			}
			// Started afresh (on the kept layer) if it comes back.
			st.SpecHash, st.PID, st.RestartCount = "", 0, 0
			break
		}
		if err := r.teardownIn(ctx, rec, sb, why); err != nil {
			return nil, err
		}
		st.Driver, st.SpecHash, st.PID, st.RestartCount, st.Phase = "", "", 0, 0, v1alpha1.PhasePending
	case st.Driver != "" && !(explicit && chooseErr == nil):
		// Recorded in a driver this msbd lacks (krun on a host that lost
		// KVM, say): nothing of it can be reached from here. A final phase
		// stays what it is; an explicit isolation that a driver here gives
		// starts it afresh (the case below).
		msg := fmt.Sprintf("the sandbox runs in driver %q, which this msbd does not have; start msbd where it is available, set an isolation this host gives, or delete the sandbox", st.Driver)
		r.unavailable(sb, st, ReasonDriverUnavailable, msg)
		return nil, Terminal(errors.New(msg))
	case st.Driver != "":
		st.Driver, st.SpecHash, st.PID, st.RestartCount, st.Phase = "", "", 0, 0, v1alpha1.PhasePending
	}
	if chooseErr != nil {
		reason, msg := ReasonIsolation, chooseErr.Error()
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

// warnFallback says why a sandbox of isolation auto gets a container, when
// it is created there: this host gives no microVMs.
func (r *SandboxReconciler) warnFallback(d vmdriver.Driver, sb *v1alpha1.Sandbox) {
	iso := sb.Spec.Isolation
	if (iso != "" && iso != vmdriver.IsolationAuto) || d.Isolation() == vmdriver.IsolationMicroVM {
		return
	}
	if why := r.Drivers.MicroVMReason(); why != "" {
		r.event(sb, v1alpha1.EventWarning, ReasonContainerFallback, "isolation auto runs this sandbox in a container, not a microVM: "+why)
	}
}

// stopKeeping stops sb in d if it runs there, keeping its writable layer and
// logs (Delete without purge).
func (r *SandboxReconciler) stopKeeping(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, why string) error {
	state, err := d.State(ctx, sb.Metadata.UID)
	if errors.Is(err, vmdriver.ErrNotFound) || (err == nil && !state.Status.Alive()) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.stop(ctx, d, sb, why); err != nil {
		return err
	}
	return d.Delete(ctx, sb.Metadata.UID, false)
}

// unavailable records that sb cannot run here for reason: not Ready, one
// Warning event per change of reason, and Pending unless it already reached
// a final phase (which stays as it was: nothing needs to run for it).
func (r *SandboxReconciler) unavailable(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, reason, msg string) {
	if cond(st, v1alpha1.ConditionReady) != reason {
		r.event(sb, v1alpha1.EventWarning, reason, msg)
	}
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, reason, msg)
	st.PID = 0
	switch st.Phase {
	case v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed, v1alpha1.PhaseSuspended:
	default:
		st.Phase = v1alpha1.PhasePending
	}
}
