package reconciler

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// A start that fails on a host budget says which limit and what to raise
// (HostLimit), a refused volume says VolumeRefused; both are retried (the
// reconcile returns an error, which the queue backs off), and once the
// limit is gone the sandbox starts.
func TestStartFailureReasons(t *testing.T) {
	for _, c := range []struct {
		err          error
		reason, word string
	}{
		{errors.New("runc run failed: unable to join session keyring: unable to create session key: disk quota exceeded"), ReasonHostLimit, "kernel.keys.maxkeys"},
		{fmt.Errorf("mounts[0].hostPath: /srv/x is a symbolic link: %w", vmdriver.ErrVolumeRefused), ReasonVolumeRefused, "/srv/x"},
		{errors.New("runc run failed: exec: bad thing"), ReasonFailed, "bad thing"},
	} {
		h := newHarness(t)
		h.drv.SetError("Start", c.err)
		h.create("web", nil)
		if _, err := h.reconcile("web"); err == nil {
			t.Errorf("%v: reconcile succeeded, want an error (retried with backoff)", c.err)
		}
		st := h.get("web").Status
		var ready *v1alpha1.Condition
		for i := range st.Conditions {
			if st.Conditions[i].Type == v1alpha1.ConditionReady {
				ready = &st.Conditions[i]
			}
		}
		if ready == nil || ready.Reason != c.reason || !strings.Contains(ready.Message, c.word) {
			t.Errorf("%v: Ready = %+v, want reason %s naming %s", c.err, ready, c.reason, c.word)
		}
		h.drv.SetError("Start", nil)
		h.mustReconcile("web")
		if got := h.get("web").Status.Phase; got != v1alpha1.PhaseRunning {
			t.Errorf("%v: after the cause went, phase %s", c.err, got)
		}
	}
}
