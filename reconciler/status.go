package reconciler

import (
	"encoding/json"
	"errors"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// writeStatus records st. Status belongs to the reconciler alone (one worker
// per key), so when a user's concurrent spec change made sb stale, the fresh
// object gets this status anyway: dropping it would lose what was done (a
// sandbox started with some spec) and the next reconcile would misjudge it.
// ObservedGeneration keeps saying which spec st is about.
func (r *SandboxReconciler) writeStatus(sb *v1alpha1.Sandbox, st v1alpha1.SandboxStatus) error {
	for attempt := 0; ; attempt++ {
		if statusEqual(sb.Status, st) {
			return nil
		}
		sb.Status = st
		err := r.Store.UpdateStatus(sb)
		if err == nil || !errors.Is(err, v1alpha1.ErrConflict) || attempt == 4 {
			return err
		}
		fresh := &v1alpha1.Sandbox{}
		if gerr := r.Store.Get(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name, fresh); gerr != nil {
			return err
		}
		*sb = *fresh
	}
}

func copyStatus(s v1alpha1.SandboxStatus) v1alpha1.SandboxStatus {
	var out v1alpha1.SandboxStatus
	b, _ := json.Marshal(s)
	_ = json.Unmarshal(b, &out)
	return out
}

func statusEqual(a, b v1alpha1.SandboxStatus) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func (r *SandboxReconciler) condition(st *v1alpha1.SandboxStatus, typ string, status v1alpha1.ConditionStatus, reason, msg string) {
	v1alpha1.SetCondition(&st.Conditions, v1alpha1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: time.Now().UTC().Truncate(time.Second)})
}

func cond(st *v1alpha1.SandboxStatus, typ string) string {
	if c := v1alpha1.FindCondition(st.Conditions, typ); c != nil {
		return c.Reason
	}
	return ""
}

func (r *SandboxReconciler) event(sb *v1alpha1.Sandbox, typ, reason, msg string) {
	r.Events.Event(RefOf(sb), typ, reason, msg)
}

func hasFinalizer(sb *v1alpha1.Sandbox) bool {
	for _, f := range sb.Metadata.Finalizers {
		if f == v1alpha1.FinalizerSandbox {
			return true
		}
	}
	return false
}
