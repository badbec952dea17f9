package reconciler

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
)

func TestSandboxImageErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		reason   string
		terminal bool
		msg      string
	}{
		{"pull failed", errors.New("GET https://registry.test/v2/app/manifests/1.0: UNAUTHORIZED: authentication required"),
			ReasonPullFailed, false, "UNAUTHORIZED: authentication required"},
		{"invalid image", &images.InvalidImageError{Layer: "sha256:" + strings.Repeat("b", 64), Entry: "../../etc/passwd", Reason: "escapes the layer root"},
			ReasonInvalidImage, true, `entry "../../etc/passwd": escapes the layer root`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.imgs.fail(testImage, tc.err)
			h.create("web", nil)

			_, err := h.reconcile("web")
			if err == nil {
				t.Fatal("Reconcile succeeded with a failing image")
			}
			if isTerminal(err) != tc.terminal {
				t.Fatalf("Reconcile error %v: terminal %v, want %v", err, isTerminal(err), tc.terminal)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not carry %q", err, tc.msg)
			}
			wantCalls(t, "image failed", h.drv.Mutations())
			got := h.get("web")
			c := wantCond(t, got, v1alpha1.ConditionImageReady, v1alpha1.ConditionFalse, tc.reason)
			if !strings.Contains(c.Message, tc.msg) {
				t.Errorf("ImageReady message %q, want it to contain %q", c.Message, tc.msg)
			}
			wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, tc.reason)
			if got.Status.Phase != v1alpha1.PhasePending {
				t.Errorf("phase = %q, want Pending", got.Status.Phase)
			}
			if h.eventCount("web", tc.reason) != 1 {
				t.Errorf("events %q, want one %s", h.reasons("web"), tc.reason)
			}

			// Once the image is fixed the sandbox starts.
			h.imgs.fail(testImage, nil)
			h.mustReconcile("web")
			wantCalls(t, "image fixed", h.drv.Mutations(), "Create", "Start")
			got = h.get("web")
			wantCond(t, got, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled)
			wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
		})
	}
}

// A pull that takes a while shows ImageReady Unknown/Pulling meanwhile and
// does not hold a reconcile worker: Reconcile returns, and the pull requeues
// the sandbox when it ends. Other sandboxes start meanwhile.
func TestSandboxSlowPullReportsPulling(t *testing.T) {
	h := newHarness(t)
	gate := make(chan struct{})
	h.imgs.gate = gate
	h.create("web", nil)

	h.reconcileReturns("web", "a slow pull")
	sb := h.get("web")
	wantCond(t, sb, v1alpha1.ConditionImageReady, v1alpha1.ConditionUnknown, ReasonPulling)
	wantPhase(t, sb, v1alpha1.PhasePending)
	if slices.Contains(h.requeues(), key("web")) {
		t.Fatal("requeued before the pull ended")
	}
	// A resync during the pull joins it rather than pulling again.
	h.mustReconcile("web")
	if n := len(h.imgs.pullLog()); n != 1 {
		t.Fatalf("%d pulls, want 1 (a reconcile during the pull joins it)", n)
	}

	close(gate)
	h.waitRequeued("web", 0, "the finished pull never requeued the sandbox")
	h.mustReconcile("web")
	got := h.get("web")
	wantCond(t, got, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled)
	wantPhase(t, got, v1alpha1.PhaseRunning)
	var reasons []string
	for _, e := range h.events("web") {
		reasons = append(reasons, e.Reason)
	}
	if !slices.Contains(reasons, ReasonPulling) || !slices.Contains(reasons, ReasonPulled) {
		t.Errorf("events %v, want Pulling and Pulled", reasons)
	}
}

// Deleting a sandbox whose image is still being pulled stops the pull.
func TestSandboxDeleteDuringPull(t *testing.T) {
	h := newHarness(t)
	h.imgs.gate = make(chan struct{}) // never opens
	sb := h.create("web", nil)
	h.mustReconcile("web")
	wantCond(t, h.get("web"), v1alpha1.ConditionImageReady, v1alpha1.ConditionUnknown, ReasonPulling)
	if err := h.st.Delete(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web")
	h.r.mu.Lock()
	n := len(h.r.ops)
	h.r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d pulls still tracked after the sandbox was deleted", n)
	}
}

// A changed spec is not Ready before the sandbox runs it: while the new image
// is pulled the old run goes on, but Ready is False (Updating) so nothing
// waiting for the new spec mistakes the old run for it; a finished sandbox
// whose spec changed is Pending again, not its old final phase.
func TestSandboxSpecChangeNotReadyUntilApplied(t *testing.T) {
	h := newHarness(t)
	h.create("web", nil)
	h.mustReconcile("web")
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")

	gate := make(chan struct{})
	h.imgs.mu.Lock()
	h.imgs.gate = gate
	h.imgs.imgs["example.com/new:v2"] = h.imgs.imgs[testImage]
	h.imgs.mu.Unlock()
	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "example.com/new:v2" })
	h.mustReconcile("web") // the pull is slow: returns while it runs
	got := h.get("web")
	wantCond(t, got, v1alpha1.ConditionImageReady, v1alpha1.ConditionUnknown, ReasonPulling)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonUpdating)
	wantPhase(t, got, v1alpha1.PhaseRunning) // the old run still serves
	close(gate)
	h.imgs.mu.Lock()
	h.imgs.gate = nil
	h.imgs.mu.Unlock()
	h.waitRequeued("web", 0, "the pull never requeued the sandbox")
	h.mustReconcile("web")
	got = h.get("web")
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")

	// Finished for good, then changed: Pending until it runs the new spec.
	h.create("job", func(sb *v1alpha1.Sandbox) { sb.Spec.RestartPolicy = v1alpha1.RestartNever })
	h.mustReconcile("job")
	h.exit(h.get("job").Metadata.UID, 1)
	h.mustReconcile("job")
	wantPhase(t, h.get("job"), v1alpha1.PhaseFailed)
	gate2 := make(chan struct{})
	defer close(gate2)
	h.imgs.mu.Lock()
	h.imgs.gate = gate2
	h.imgs.imgs["example.com/job:v2"] = h.imgs.imgs[testImage]
	h.imgs.mu.Unlock()
	h.update("job", func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "example.com/job:v2" })
	h.mustReconcile("job")
	got = h.get("job")
	wantPhase(t, got, v1alpha1.PhasePending)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonUpdating)
}

// A sandbox that takes its grace period to stop does not hold a reconcile
// worker: deleting it returns at once (finalizer kept), the stop requeues it
// when done, and the next reconcile finishes the deletion. Killing is told
// once however often it is reconciled meanwhile.
func TestSandboxSlowStopDoesNotHoldWorker(t *testing.T) {
	h := newHarness(t)
	sb := h.create("web", nil)
	h.mustReconcile("web")
	gate := make(chan struct{})
	h.drv.GateStop(gate)
	if err := h.st.Delete(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.reconcileReturns("web", "a slow stop")
	}
	if got := h.get("web"); !hasFinalizer(got) {
		t.Fatal("finalizer removed before the sandbox stopped")
	}
	if n := h.eventCount("web", ReasonKilling); n != 1 {
		t.Errorf("%d Killing events over three reconciles of one stop, want 1", n)
	}
	close(gate)
	h.waitRequeued("web", 0, "the finished stop never requeued the sandbox")
	h.mustReconcile("web")
	if err := h.st.Get(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name, &v1alpha1.Sandbox{}); !errors.Is(err, v1alpha1.ErrNotFound) {
		t.Fatalf("sandbox still stored after its stop ended: %v", err)
	}
	if b, ok := h.drv.Box(sb.Metadata.UID); ok {
		t.Errorf("driver still has the sandbox: %+v", b)
	}
}

// Slow stops of one sandbox, one after another: each stop of a new run
// really stops it (SIGTERM, grace) and is told; the image pulled for a
// restart is not pulled again because a slow stop came between; a sandbox
// being suspended is not Ready while it stops.
func TestSandboxSlowStopsInSequence(t *testing.T) {
	h := newHarness(t)
	h.create("web", func(sb *v1alpha1.Sandbox) { sb.Spec.ImagePullPolicy = "Always" })
	h.mustReconcile("web")
	slowStop := func(change func(*v1alpha1.Sandbox)) {
		t.Helper()
		gate := make(chan struct{})
		h.drv.GateStop(gate)
		h.update("web", change)
		h.mustReconcile("web") // the stop takes its time
		before := h.requeueCount("web")
		close(gate)
		h.drv.GateStop(nil)
		h.waitRequeued("web", before, "the stop never requeued the sandbox")
		h.mustReconcile("web")
	}
	pulls := len(h.imgs.pullLog())
	h.drv.Reset()
	slowStop(func(sb *v1alpha1.Sandbox) { sb.Spec.Env = []v1alpha1.EnvVar{{Name: "A", Value: "1"}} })
	wantCalls(t, "first spec change", h.drv.Mutations(), "Stop", "Delete(false)", "Create", "Start")
	if n := len(h.imgs.pullLog()) - pulls; n != 1 {
		t.Errorf("%d pulls for one spec change with a slow stop, want 1", n)
	}
	h.drv.Reset()
	slowStop(func(sb *v1alpha1.Sandbox) { sb.Spec.Env[0].Value = "2" })
	wantCalls(t, "second spec change", h.drv.Mutations(), "Stop", "Delete(false)", "Create", "Start")
	if n := h.eventCount("web", ReasonKilling); n != 2 {
		t.Errorf("%d Killing events for two stops, want 2", n)
	}
	wantCond(t, h.get("web"), v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")

	// Suspending: not Ready while it stops, Suspended after.
	gate := make(chan struct{})
	h.drv.GateStop(gate)
	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.OperatingMode = v1alpha1.ModeSuspended })
	h.mustReconcile("web")
	got := h.get("web")
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSuspended)
	wantPhase(t, got, v1alpha1.PhaseRunning)
	before := h.requeueCount("web")
	close(gate)
	for range 3 { // the stop's requeue, then at most the exit watcher's
		h.waitRequeued("web", before, "the stop never requeued the sandbox")
		before = h.requeueCount("web")
		h.mustReconcile("web")
		if h.get("web").Status.Phase == v1alpha1.PhaseSuspended {
			return
		}
	}
	t.Fatal("never Suspended after its stop ended")
}
