package reconciler

import (
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
)

// A main command the memory limit killed ends OOMKilled (status, Ready,
// one Warning event); one that exited 137 by itself ends with Error.
func TestSandboxOOMKilled(t *testing.T) {
	for _, tc := range []struct {
		name       string
		oom        bool
		reason     string
		oomEvents  int
		msgContain string
	}{
		{"oom", true, ReasonOOMKilled, 1, "memory limit (64Mi)"},
		{"exit137", false, "Error", 0, "exited with code 137"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			sb := h.create("job", func(sb *v1alpha1.Sandbox) {
				sb.Spec.RestartPolicy = v1alpha1.RestartNever
				sb.Spec.Resources.Memory = "64Mi"
			})
			h.mustReconcile("job")
			if tc.oom {
				if err := h.drv.OOMKill(sb.Metadata.UID); err != nil {
					t.Fatal(err)
				}
			} else {
				h.exit(sb.Metadata.UID, 137)
			}
			h.mustReconcile("job")
			h.mustReconcile("job")
			got := h.get("job")
			wantPhase(t, got, v1alpha1.PhaseFailed)
			wantExitCode(t, got, 137)
			if got.Status.TerminationReason != tc.reason {
				t.Errorf("terminationReason %q, want %q", got.Status.TerminationReason, tc.reason)
			}
			c := wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, tc.reason)
			if !strings.Contains(c.Message, tc.msgContain) {
				t.Errorf("Ready message %q, want it to contain %q", c.Message, tc.msgContain)
			}
			if n := h.eventCount("job", ReasonOOMKilled); n != tc.oomEvents {
				t.Errorf("OOMKilled events: %d, want %d", n, tc.oomEvents)
			}
		})
	}
}

// A restarted sandbox says in its back-off that the memory limit killed it,
// and its new run starts with no termination reason.
func TestSandboxOOMKilledRestarts(t *testing.T) {
	h := newHarness(t)
	sb := h.create("svc", func(sb *v1alpha1.Sandbox) { sb.Spec.RestartPolicy = v1alpha1.RestartAlways })
	h.mustReconcile("svc")
	if err := h.drv.OOMKill(sb.Metadata.UID); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("svc")
	got := h.get("svc")
	if got.Status.TerminationReason != ReasonOOMKilled {
		t.Errorf("terminationReason %q, want OOMKilled", got.Status.TerminationReason)
	}
	if c := v1alpha1.FindCondition(got.Status.Conditions, v1alpha1.ConditionReady); c == nil || !strings.Contains(c.Message, "OOMKilled") {
		t.Errorf("Ready condition %+v does not say OOMKilled", c)
	}
	if n := h.eventCount("svc", ReasonOOMKilled); n != 1 {
		t.Errorf("OOMKilled events: %d, want 1", n)
	}
}
