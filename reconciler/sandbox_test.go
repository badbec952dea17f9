package reconciler

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/drivertest"
)

func TestSandboxFreshStart(t *testing.T) {
	h := newHarness(t)
	created := h.create("web", nil)

	res, err := h.reconcile("web")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v, want 0 (no timer pending)", res.RequeueAfter)
	}
	wantCalls(t, "first reconcile", h.drv.Mutations(), "Create", "Start")

	sb := h.get("web")
	wantPhase(t, sb, v1alpha1.PhaseRunning)
	wantCond(t, sb, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	wantCond(t, sb, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled)
	if sb.Status.ImageDigest != testDigest {
		t.Errorf("imageDigest = %q, want %q", sb.Status.ImageDigest, testDigest)
	}
	if !slices.Contains(sb.Metadata.Finalizers, v1alpha1.FinalizerSandbox) {
		t.Errorf("finalizers = %q, want %q", sb.Metadata.Finalizers, v1alpha1.FinalizerSandbox)
	}
	if sb.Status.SpecHash == "" || sb.Status.StartedAt == nil || sb.Status.PID == 0 {
		t.Errorf("status = %+v, want specHash, startedAt and pid", sb.Status)
	}
	if sb.Status.Driver != "fake" || sb.Status.Isolation != v1alpha1.IsolationContainer {
		t.Errorf("driver/isolation = %q/%q, want fake/container", sb.Status.Driver, sb.Status.Isolation)
	}
	if sb.Status.ObservedGeneration != sb.Metadata.Generation {
		t.Errorf("observedGeneration = %d, want %d", sb.Status.ObservedGeneration, sb.Metadata.Generation)
	}
	if sb.Status.ExitCode != nil || sb.Status.RestartCount != 0 {
		t.Errorf("exitCode/restartCount = %s/%d, want nil/0", ptrString(sb.Status.ExitCode), sb.Status.RestartCount)
	}

	specs := h.drv.Created()
	if len(specs) != 1 {
		t.Fatalf("created %d specs, want 1", len(specs))
	}
	s := specs[0]
	if s.ID != created.Metadata.UID || s.Hostname != "web" || s.AgentPath != testAgent ||
		!slices.Equal(s.Layers, []string{h.layer}) || !slices.Equal(s.Args, []string{"/bin/app", "serve"}) {
		t.Errorf("driver spec = %+v", s)
	}
	if got := h.imgs.pullLog(); !slices.Equal(got, []string{testImage + " IfNotPresent"}) {
		t.Errorf("pulls = %q, want one IfNotPresent pull", got)
	}

	if got, want := h.reasons("web"), []string{ReasonPulled, ReasonCreated, ReasonStarted}; !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestSandboxReconcileIsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.create("web", nil)
	h.mustReconcile("web")
	before := h.get("web")
	eventsBefore := h.events("web")
	h.drv.Reset()

	for range 3 {
		if res := h.mustReconcile("web"); res.RequeueAfter != 0 {
			t.Errorf("RequeueAfter = %v, want 0", res.RequeueAfter)
		}
	}
	wantCalls(t, "steady state", h.drv.Mutations())
	// A running sandbox on its own spec needs no image lookup (the resync path).
	if pulls := h.imgs.pullLog(); len(pulls) != 1 {
		t.Errorf("pulls = %q: steady-state reconciles resolved the image again", pulls)
	}
	after := h.get("web")
	if after.Metadata.ResourceVersion != before.Metadata.ResourceVersion {
		t.Errorf("resourceVersion %s → %s: a reconcile with nothing to do wrote the object\nbefore: %+v\nafter:  %+v",
			before.Metadata.ResourceVersion, after.Metadata.ResourceVersion, before.Status, after.Status)
	}
	eventsAfter := h.events("web")
	if len(eventsAfter) != len(eventsBefore) {
		t.Errorf("events %q → %q", reasonsOf(eventsBefore), reasonsOf(eventsAfter))
	}
	for _, ev := range eventsAfter {
		if ev.Count != 1 {
			t.Errorf("event %s recorded %d times, want once", ev.Reason, ev.Count)
		}
	}
}

func reasonsOf(evs []v1alpha1.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Reason)
	}
	return out
}

// A main command that ends is not restarted when the policy says so; the
// final phase, exit code and reason stay put across later reconciles.
func TestSandboxFinishedWithoutRestart(t *testing.T) {
	for _, tc := range []struct {
		policy     v1alpha1.RestartPolicy
		code       int
		phase      v1alpha1.SandboxPhase
		reason     string // Ready's
		event      string
		eventType  string
		msgContain string
	}{
		{v1alpha1.RestartNever, 3, v1alpha1.PhaseFailed, "Error", ReasonFailed, v1alpha1.EventWarning, "exited with code 3"},
		{v1alpha1.RestartNever, 0, v1alpha1.PhaseSucceeded, ReasonCompleted, ReasonCompleted, v1alpha1.EventNormal, "exited with code 0"},
		{v1alpha1.RestartOnFailure, 0, v1alpha1.PhaseSucceeded, ReasonCompleted, ReasonCompleted, v1alpha1.EventNormal, "exited with code 0"},
	} {
		t.Run(string(tc.policy)+"/exit"+string(rune('0'+tc.code)), func(t *testing.T) {
			h := newHarness(t)
			sb := h.create("job", func(sb *v1alpha1.Sandbox) { sb.Spec.RestartPolicy = tc.policy })
			h.mustReconcile("job")
			h.exit(sb.Metadata.UID, tc.code)
			h.drv.Reset()

			if res := h.mustReconcile("job"); res.RequeueAfter != 0 {
				t.Errorf("RequeueAfter = %v, want 0: nothing to wait for", res.RequeueAfter)
			}
			got := h.get("job")
			wantPhase(t, got, tc.phase)
			wantExitCode(t, got, int32(tc.code))
			c := wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, tc.reason)
			if !strings.Contains(c.Message, tc.msgContain) {
				t.Errorf("Ready message %q, want it to contain %q", c.Message, tc.msgContain)
			}
			if got.Status.FinishedAt == nil || got.Status.PID != 0 {
				t.Errorf("finishedAt/pid = %v/%d, want set/0", got.Status.FinishedAt, got.Status.PID)
			}
			rv := got.Metadata.ResourceVersion

			for range 3 {
				h.mustReconcile("job")
			}
			wantCalls(t, "after the command ended", h.drv.Mutations())
			again := h.get("job")
			wantPhase(t, again, tc.phase)
			if again.Metadata.ResourceVersion != rv {
				t.Errorf("later reconciles rewrote the status: %+v", again.Status)
			}
			if n := h.eventCount("job", tc.event); n != 1 {
				t.Errorf("%s events: %d, want 1", tc.event, n)
			}
			for _, ev := range h.events("job") {
				if ev.Reason == tc.event && ev.Type != tc.eventType {
					t.Errorf("%s event type %s, want %s", ev.Reason, ev.Type, tc.eventType)
				}
			}
		})
	}
}

// OnFailure after a failure, and Always after any exit, restart the command
// after base·2^restarts (capped), counting restarts.
func TestSandboxRestartBackoff(t *testing.T) {
	for _, tc := range []struct {
		policy v1alpha1.RestartPolicy
		code   int
	}{
		{v1alpha1.RestartOnFailure, 3},
		{v1alpha1.RestartAlways, 0},
	} {
		// In a synctest bubble time is the bubble's: the back-off is
		// checked to the nanosecond, without sleeping it out.
		t.Run(string(tc.policy), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				sb := h.create("svc", func(sb *v1alpha1.Sandbox) { sb.Spec.RestartPolicy = tc.policy })
				id := sb.Metadata.UID
				h.mustReconcile("svc")

				// delay before restart n+1, as the condition message prints it.
				delays := []string{"50ms", "100ms", "200ms", "200ms"}
				for i, delay := range delays {
					h.exit(id, tc.code)
					h.drv.Reset()

					res := h.mustReconcile("svc")
					wantCalls(t, "exit seen", h.drv.Mutations())
					d, _ := time.ParseDuration(delay)
					if res.RequeueAfter != d {
						t.Fatalf("restart %d: RequeueAfter = %v, want %v", i+1, res.RequeueAfter, d)
					}
					got := h.get("svc")
					wantPhase(t, got, v1alpha1.PhaseRunning) // as in CrashLoopBackOff
					wantExitCode(t, got, int32(tc.code))
					c := wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonBackOff)
					wantMsg := "Back-off " + delay + " restarting sandbox (exit code " + string(rune('0'+tc.code)) + ")"
					if c.Message != wantMsg {
						t.Fatalf("restart %d: Ready message %q, want %q", i+1, c.Message, wantMsg)
					}
					if got.Status.RestartCount != int32(i) {
						t.Fatalf("restartCount = %d, want %d", got.Status.RestartCount, i)
					}

					// Before the delay is over nothing happens, and BackOff is
					// told once per exit.
					time.Sleep(d - time.Nanosecond)
					if res := h.mustReconcile("svc"); res.RequeueAfter != time.Nanosecond {
						t.Fatalf("restart %d: RequeueAfter = %v a nanosecond before the back-off ends", i+1, res.RequeueAfter)
					}
					wantCalls(t, "during back-off", h.drv.Mutations())
					msgs := h.eventMessages("svc", ReasonBackOff)
					if n := h.eventCount("svc", ReasonBackOff); n != i+1 || !slices.Contains(msgs, wantMsg) {
						t.Fatalf("BackOff events %q (%d in all), want %d, one %q", msgs, n, i+1, wantMsg)
					}

					time.Sleep(time.Nanosecond)
					h.mustReconcile("svc")
					wantCalls(t, "back-off over", h.drv.Mutations(), "Delete(false)", "Create", "Start")
					got = h.get("svc")
					wantPhase(t, got, v1alpha1.PhaseRunning)
					wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
					if got.Status.RestartCount != int32(i+1) || got.Status.ExitCode != nil || got.Status.FinishedAt != nil {
						t.Fatalf("after restart %d: restartCount %d exitCode %s finishedAt %v, want %d, nil, nil",
							i+1, got.Status.RestartCount, ptrString(got.Status.ExitCode), got.Status.FinishedAt, i+1)
					}
					if got := h.boxStatus(id); got != vmdriver.StatusRunning {
						t.Fatalf("sandbox is %q after the restart", got)
					}
				}
				started := h.eventMessages("svc", ReasonStarted)
				want := []string{"Started sandbox", "Restarted sandbox (restart 1)", "Restarted sandbox (restart 2)", "Restarted sandbox (restart 3)", "Restarted sandbox (restart 4)"}
				if !slices.Equal(started, want) {
					t.Errorf("Started events %q, want %q", started, want)
				}
				if n := h.eventCount("svc", ReasonCreated); n != 1 {
					t.Errorf("Created events: %d, want 1 (a restart re-uses the sandbox)", n)
				}
			})
		})
	}
}

func TestSandboxSuspendAndResume(t *testing.T) {
	h := newHarness(t)
	sb := h.create("dev", nil)
	id := sb.Metadata.UID
	h.mustReconcile("dev")
	h.drv.Reset()

	h.update("dev", func(sb *v1alpha1.Sandbox) { sb.Spec.OperatingMode = v1alpha1.ModeSuspended })
	h.mustReconcile("dev")
	wantCalls(t, "suspend", h.drv.Mutations(), "Stop", "Delete(false)")
	got := h.get("dev")
	wantPhase(t, got, v1alpha1.PhaseSuspended)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSuspended)
	if got.Status.PID != 0 {
		t.Errorf("pid = %d while suspended", got.Status.PID)
	}
	if got := h.boxStatus(id); got != vmdriver.StatusStopped {
		t.Fatalf("suspended sandbox in the driver: %q, want kept and stopped", got)
	}
	if got := h.reasons("dev"); !slices.Equal(got[len(got)-2:], []string{ReasonKilling, ReasonSuspended}) {
		t.Errorf("events %q, want Killing, Suspended last", got)
	}
	h.mustReconcile("dev")
	if h.eventCount("dev", ReasonSuspended) != 1 || h.eventCount("dev", ReasonKilling) != 1 {
		t.Errorf("events %q: Killing and Suspended must be told once", h.reasons("dev"))
	}
	if got := h.boxStatus(id); got != vmdriver.StatusStopped {
		t.Fatalf("sandbox %q while suspended", got)
	}

	h.drv.Reset()
	h.update("dev", func(sb *v1alpha1.Sandbox) { sb.Spec.OperatingMode = v1alpha1.ModeRunning })
	h.mustReconcile("dev")
	muts := h.drv.Mutations()
	if n := len(muts); n < 2 || !slices.Equal(muts[n-2:], []string{"Create", "Start"}) || slices.Contains(muts, "Delete(true)") {
		t.Fatalf("resume: driver calls %q, want Create, Start last and no purge", muts)
	}
	got = h.get("dev")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if got.Status.RestartCount != 0 || got.Status.SpecHash == "" {
		t.Errorf("restartCount/specHash = %d/%q, want 0/set", got.Status.RestartCount, got.Status.SpecHash)
	}
}

func TestSandboxCreatedSuspendedIsNeverStarted(t *testing.T) {
	h := newHarness(t)
	h.create("cold", func(sb *v1alpha1.Sandbox) { sb.Spec.OperatingMode = v1alpha1.ModeSuspended })
	h.mustReconcile("cold")
	h.mustReconcile("cold")
	wantCalls(t, "created suspended", h.drv.Mutations())
	got := h.get("cold")
	wantPhase(t, got, v1alpha1.PhaseSuspended)
	wantCond(t, got, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled)
	if n := h.eventCount("cold", ReasonKilling); n != 0 {
		t.Errorf("Killing told for a sandbox that never ran")
	}
}

func TestSandboxSpecChangeRestarts(t *testing.T) {
	h := newHarness(t)
	h.create("web", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{{Name: "MODE", Value: "one"}}
	})
	h.mustReconcile("web")
	oldHash := h.get("web").Status.SpecHash
	h.drv.Reset()

	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Env[0].Value = "two" })
	h.mustReconcile("web")
	wantCalls(t, "env changed", h.drv.Mutations(), "Stop", "Delete(false)", "Create", "Start")
	specs := h.drv.Created()
	if len(specs) != 1 || !slices.Contains(specs[0].Env, "MODE=two") || slices.Contains(specs[0].Env, "MODE=one") {
		t.Fatalf("re-created with %+v, want env MODE=two", specs)
	}
	got := h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if got.Status.SpecHash == oldHash || got.Status.ObservedGeneration != 2 || got.Status.RestartCount != 0 {
		t.Errorf("specHash %q (was %q), observedGeneration %d, restartCount %d", got.Status.SpecHash, oldHash, got.Status.ObservedGeneration, got.Status.RestartCount)
	}
	if msgs := h.eventMessages("web", ReasonKilling); len(msgs) != 1 || !strings.Contains(msgs[0], "spec changed") {
		t.Errorf("Killing events %q", msgs)
	}

	// A change the running sandbox does not see (restartPolicy, lifecycle)
	// does not restart it.
	h.drv.Reset()
	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.RestartPolicy = v1alpha1.RestartAlways })
	h.mustReconcile("web")
	wantCalls(t, "restartPolicy changed", h.drv.Mutations())
	if got := h.get("web"); got.Status.ObservedGeneration != 3 {
		t.Errorf("observedGeneration = %d, want 3", got.Status.ObservedGeneration)
	}
}

func TestSandboxLifecycleExpiry(t *testing.T) {
	h := newHarness(t)
	ttl := v1alpha1.Duration("1h")
	sb := h.create("tmp", func(sb *v1alpha1.Sandbox) { sb.Spec.Lifecycle.TTL = &ttl })
	id := sb.Metadata.UID

	res := h.mustReconcile("tmp")
	remaining := time.Until(sb.Metadata.CreationTimestamp.Add(time.Hour))
	if res.RequeueAfter < remaining-time.Minute || res.RequeueAfter > remaining+time.Second {
		t.Errorf("RequeueAfter = %v, want about %v (until the ttl ends)", res.RequeueAfter, remaining)
	}
	got := h.get("tmp")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	if want := sb.Metadata.CreationTimestamp.Add(time.Hour); got.Status.ExpiresAt == nil || !got.Status.ExpiresAt.Equal(want) {
		t.Errorf("expiresAt = %v, want %v", got.Status.ExpiresAt, want)
	}
	h.drv.Reset()

	// The ttl now ends before the present: the sandbox is stopped and purged.
	short := v1alpha1.Duration("1ns")
	h.update("tmp", func(sb *v1alpha1.Sandbox) { sb.Spec.Lifecycle.TTL = &short })
	if res := h.mustReconcile("tmp"); res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v after expiry, want 0", res.RequeueAfter)
	}
	wantCalls(t, "expired", h.drv.Mutations(), "Stop", "Delete(true)")
	if _, ok := h.drv.Box(id); ok {
		t.Errorf("expired sandbox still in the driver")
	}
	got = h.get("tmp")
	wantPhase(t, got, v1alpha1.PhaseFailed)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonExpired)
	if got.Status.PID != 0 {
		t.Errorf("pid = %d after expiry", got.Status.PID)
	}
	rv := got.Metadata.ResourceVersion

	h.mustReconcile("tmp")
	h.mustReconcile("tmp")
	if n, m := h.eventCount("tmp", ReasonExpired), h.eventCount("tmp", ReasonKilling); n != 1 || m != 1 {
		t.Errorf("Expired told %d times, Killing %d, want once each", n, m)
	}
	if got := h.get("tmp"); got.Metadata.ResourceVersion != rv || got.Status.Phase != v1alpha1.PhaseFailed {
		t.Errorf("status changed after expiry: %+v", got.Status)
	}
	if slices.Contains(h.drv.Mutations(), "Create") || slices.Contains(h.drv.Mutations(), "Start") {
		t.Errorf("an expired sandbox was started again: %q", h.drv.Mutations())
	}
}

func TestSandboxShutdownTimeInFutureRequeues(t *testing.T) {
	h := newHarness(t)
	at := time.Now().Add(10 * time.Minute)
	h.create("tmp", func(sb *v1alpha1.Sandbox) { sb.Spec.Lifecycle.ShutdownTime = &at })
	res := h.mustReconcile("tmp")
	if remaining := time.Until(at); res.RequeueAfter < remaining-time.Minute || res.RequeueAfter > remaining+time.Second {
		t.Errorf("RequeueAfter = %v, want about %v", res.RequeueAfter, remaining)
	}
	wantCalls(t, "shutdownTime ahead", h.drv.Mutations(), "Create", "Start")
}

func TestSandboxDeletion(t *testing.T) {
	h := newHarness(t)
	sb := h.create("web", nil)
	id := sb.Metadata.UID
	h.mustReconcile("web")
	h.drv.Reset()

	if err := h.st.Delete(v1alpha1.KindSandbox, v1alpha1.DefaultNamespace, "web"); err != nil {
		t.Fatal(err)
	}
	// The finalizer holds the object until the reconciler has cleaned up.
	if got := h.get("web"); got.Metadata.DeletionTimestamp == nil {
		t.Fatalf("deleted Sandbox has no deletionTimestamp")
	}
	h.mustReconcile("web")
	wantCalls(t, "deletion", h.drv.Mutations(), "Stop", "Delete(true)")
	if _, ok := h.drv.Box(id); ok {
		t.Errorf("sandbox still in the driver after deletion")
	}
	err := h.st.Get(v1alpha1.KindSandbox, v1alpha1.DefaultNamespace, "web", &v1alpha1.Sandbox{})
	if !errors.Is(err, v1alpha1.ErrNotFound) {
		t.Fatalf("Get after deletion: %v, want not found", err)
	}
	if evs := h.events("web"); len(evs) != 0 {
		t.Errorf("events outlived the Sandbox: %q", reasonsOf(evs))
	}

	h.drv.Reset()
	if res, err := h.reconcile("web"); err != nil || res.RequeueAfter != 0 {
		t.Errorf("reconcile of a gone Sandbox = %v, %v", res, err)
	}
	wantCalls(t, "gone", h.drv.Mutations())
}

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

// A Sandbox asking for a microVM on a host that cannot run one waits,
// Pending with the reason, and is never run with weaker isolation.
func TestSandboxMicroVMUnavailable(t *testing.T) {
	h := newHarness(t)
	h.create("vm", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationMicroVM })
	for range 2 {
		_, err := h.reconcile("vm")
		if !isTerminal(err) {
			t.Fatalf("Reconcile = %v, want a TerminalError", err)
		}
	}
	if calls := h.drv.Calls(); len(calls) != 0 {
		t.Errorf("driver calls %q, want none", calls)
	}
	if pulls := h.imgs.pullLog(); len(pulls) != 0 {
		t.Errorf("pulled %q for a sandbox that cannot run", pulls)
	}
	got := h.get("vm")
	c := wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonMicroVMUnavailable)
	if !strings.Contains(c.Message, "KVM") {
		t.Errorf("Ready message %q does not say what is missing", c.Message)
	}
	wantPhase(t, got, v1alpha1.PhasePending)
	if got.Status.Driver != "" {
		t.Errorf("status.driver = %q for a sandbox that runs nowhere", got.Status.Driver)
	}
	if h.eventCount("vm", ReasonMicroVMUnavailable) != 1 {
		t.Errorf("events %q, want one MicroVMUnavailable", h.reasons("vm"))
	}
}

// A running sandbox whose spec moves it to an isolation this host lacks is
// stopped and removed from its driver (it must not keep running with less
// isolation than asked for); moved back, it starts afresh.
func TestSandboxIsolationChange(t *testing.T) {
	h := newHarness(t)
	sb := h.create("box", nil)
	h.mustReconcile("box")
	if d := h.get("box").Status.Driver; d != "fake" {
		t.Fatalf("status.driver = %q, want fake", d)
	}
	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationMicroVM })
	if _, err := h.reconcile("box"); !isTerminal(err) {
		t.Fatalf("Reconcile = %v, want a TerminalError", err)
	}
	wantCalls(t, "moved to microvm", h.drv.Mutations(), "Stop", "Delete(true)")
	if _, ok := h.drv.Box(sb.Metadata.UID); ok {
		t.Error("the driver still holds the sandbox")
	}
	got := h.get("box")
	wantPhase(t, got, v1alpha1.PhasePending)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonMicroVMUnavailable)

	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationContainer })
	h.mustReconcile("box")
	wantCalls(t, "moved back to container", h.drv.Mutations(), "Create", "Start")
	got = h.get("box")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	if got.Status.Driver != "fake" || got.Status.Isolation != v1alpha1.IsolationContainer {
		t.Errorf("driver/isolation = %q/%q", got.Status.Driver, got.Status.Isolation)
	}
}

// spec.ports reach no driver yet: the sandbox runs, and says so.
func TestSandboxPortsNotPublished(t *testing.T) {
	h := newHarness(t)
	h.create("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Ports = []v1alpha1.Port{{ContainerPort: 8000, HostPort: 18000}} })
	h.mustReconcile("web")
	h.mustReconcile("web")
	got := h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, ConditionPortsPublished, v1alpha1.ConditionFalse, ReasonPortsNotPublished)
	if n := h.eventCount("web", ReasonPortsNotPublished); n != 1 {
		t.Errorf("%d PortsNotPublished events, want 1", n)
	}
	if specs := h.drv.Created(); len(specs) != 1 || len(specs[0].Ports) != 1 || specs[0].Ports[0].ContainerPort != 8000 {
		t.Errorf("driver specs %+v, want the port passed on", specs)
	}
	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Ports = nil })
	h.mustReconcile("web")
	if c := v1alpha1.FindCondition(h.get("web").Status.Conditions, ConditionPortsPublished); c != nil {
		t.Errorf("condition %+v kept after the ports were removed", c)
	}
}

func TestSandboxAgentMissing(t *testing.T) {
	h := newHarness(t)
	h.r.AgentErr = errors.New("msb-agent not found next to msbd or in $PATH")
	h.create("web", nil)
	_, err := h.reconcile("web")
	if !isTerminal(err) {
		t.Fatalf("Reconcile = %v, want a TerminalError", err)
	}
	wantCalls(t, "agent missing", h.drv.Mutations())
	got := h.get("web")
	c := wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonAgentMissing)
	if !strings.Contains(c.Message, "msb-agent not found") {
		t.Errorf("Ready message %q does not carry the cause", c.Message)
	}
	if h.eventCount("web", ReasonAgentMissing) != 1 {
		t.Errorf("events %q", h.reasons("web"))
	}
}

func TestSandboxSecretEnv(t *testing.T) {
	const value = "s3cr3t-t0ken-value"
	h := newHarness(t)
	sb := h.create("api", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{
			{Name: "PLAIN", Value: "x"},
			{Name: "API_TOKEN", ValueFrom: &v1alpha1.EnvVarSource{SecretKeyRef: &v1alpha1.SecretKeySelector{Name: "api", Key: "token"}}},
		}
	})

	_, err := h.reconcile("api")
	if err == nil || isTerminal(err) {
		t.Fatalf("Reconcile without the Secret = %v, want a retried error", err)
	}
	wantCalls(t, "secret missing", h.drv.Mutations())
	c := wantCond(t, h.get("api"), v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSecretError)
	if !strings.Contains(c.Message, `secret "api" not found`) || !strings.Contains(c.Message, "API_TOKEN") {
		t.Errorf("Ready message %q, want the env name and the secret", c.Message)
	}

	sec := &v1alpha1.Secret{
		Metadata: v1alpha1.ObjectMeta{Name: "api", Namespace: v1alpha1.DefaultNamespace},
		Spec:     v1alpha1.SecretSpec{StringData: map[string]string{"other": value}},
	}
	if err := h.st.Create(sec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reconcile("api"); err == nil {
		t.Fatal("Reconcile with the key missing from the Secret succeeded")
	}
	c = wantCond(t, h.get("api"), v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSecretError)
	if !strings.Contains(c.Message, `has no key "token"`) {
		t.Errorf("Ready message %q, want the missing key", c.Message)
	}
	wantCalls(t, "key missing", h.drv.Mutations())

	sec = &v1alpha1.Secret{}
	if err := h.st.Get(v1alpha1.KindSecret, v1alpha1.DefaultNamespace, "api", sec); err != nil {
		t.Fatal(err)
	}
	sec.Spec.StringData = map[string]string{"token": value}
	if err := h.st.Update(sec); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("api")
	wantCalls(t, "secret present", h.drv.Mutations(), "Create", "Start")
	spec := h.drv.Created()[0]
	want := "API_TOKEN=" + secretinject.Placeholder(sb.Metadata.UID, v1alpha1.DefaultNamespace, "api", "token")
	if !slices.Contains(spec.Env, want) || !strings.HasPrefix(want, "API_TOKEN=msb-placeholder-") {
		t.Errorf("env %q, want %q", spec.Env, want)
	}
	if !slices.Contains(spec.Env, "PLAIN=x") {
		t.Errorf("env %q, want PLAIN=x", spec.Env)
	}
	b, _ := json.Marshal(spec)
	if strings.Contains(string(b), value) {
		t.Fatalf("the secret value reached the driver spec: %s", b)
	}
	got := h.get("api")
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	b, _ = json.Marshal(got)
	if strings.Contains(string(b), value) {
		t.Errorf("the secret value is in the Sandbox: %s", b)
	}
	for _, ev := range h.events("api") {
		if strings.Contains(ev.Message, value) {
			t.Errorf("the secret value is in event %s: %q", ev.Reason, ev.Message)
		}
	}

	// A new value does not restart the sandbox: the proxy substitutes it.
	h.drv.Reset()
	sec = &v1alpha1.Secret{}
	if err := h.st.Get(v1alpha1.KindSecret, v1alpha1.DefaultNamespace, "api", sec); err != nil {
		t.Fatal(err)
	}
	sec.Spec.StringData = map[string]string{"token": "rotated"}
	if err := h.st.Update(sec); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("api")
	wantCalls(t, "secret rotated", h.drv.Mutations())
}

// After an msbd restart a running sandbox is adopted, not started again.
func TestSandboxAdoption(t *testing.T) {
	h := newHarness(t)
	sb := h.create("web", nil)
	id := sb.Metadata.UID
	h.mustReconcile("web")
	hash := h.get("web").Status.SpecHash

	h.restartMsbd()
	b, _ := h.drv.Box(id)
	pid := fmt.Sprintf("pid %d", b.PID)
	h.drv.Reset()
	h.mustReconcile("web")
	h.mustReconcile("web")
	wantCalls(t, "adoption", h.drv.Mutations())
	got := h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if got.Status.PID != b.PID || got.Status.SpecHash != hash {
		t.Errorf("pid/specHash = %d/%q, want %d/%q", got.Status.PID, got.Status.SpecHash, b.PID, hash)
	}
	if got.Status.Driver != "fake" {
		t.Errorf("status.driver = %q, want the driver it was adopted from", got.Status.Driver)
	}
	msgs := h.eventMessages("web", ReasonAdopted)
	if len(msgs) != 1 || !strings.Contains(msgs[0], pid) || h.eventCount("web", ReasonAdopted) != 1 {
		t.Errorf("Adopted events %q (count %d), want one naming %s", msgs, h.eventCount("web", ReasonAdopted), pid)
	}
	// The adopted run is watched: its end is seen at once.
	before := h.requeueCount("web")
	h.exit(id, 0)
	h.waitRequeued("web", before, "the end of an adopted sandbox's run was not noticed")
}

// msbd died after starting a sandbox and before writing its status: the
// running sandbox is adopted with the current spec hash.
func TestSandboxAdoptionWithoutStatus(t *testing.T) {
	h := newHarness(t)
	h.create("web", nil)
	h.mustReconcile("web")
	hash := h.get("web").Status.SpecHash
	sb := h.get("web")
	sb.Status = v1alpha1.SandboxStatus{}
	if err := h.st.UpdateStatus(sb); err != nil {
		t.Fatal(err)
	}

	h.restartMsbd()
	h.drv.Reset()
	h.mustReconcile("web")
	wantCalls(t, "adoption without status", h.drv.Mutations())
	got := h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	if got.Status.SpecHash != hash {
		t.Errorf("specHash = %q, want %q", got.Status.SpecHash, hash)
	}
	if h.eventCount("web", ReasonAdopted) != 1 {
		t.Errorf("events %q, want one Adopted", h.reasons("web"))
	}
}

// A command that ends before the reconciler looks is seen on the next
// reconcile, which start asks for.
func TestSandboxExitRightAfterStart(t *testing.T) {
	h := newHarness(t)
	sb := h.create("once", nil)
	h.drv.OnStart(func(id string) { h.exit(id, 1) })
	h.mustReconcile("once")
	h.drv.OnStart(nil)
	if got := h.requeues(); !slices.Contains(got, key("once")) {
		t.Errorf("requeues %q, want %q", got, key("once"))
	}
	if c := v1alpha1.FindCondition(h.get("once").Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == v1alpha1.ConditionTrue {
		t.Errorf("Ready True for a sandbox that already ended")
	}
	h.mustReconcile("once")
	got := h.get("once")
	wantPhase(t, got, v1alpha1.PhaseFailed)
	wantExitCode(t, got, 1)
	if got := h.boxStatus(sb.Metadata.UID); got != vmdriver.StatusStopped {
		t.Errorf("sandbox %q", got)
	}
}

// The exit watcher requeues the Sandbox as soon as its run ends (the
// driver's Wait returns), and not before.
func TestSandboxExitWatcherRequeues(t *testing.T) {
	h := newHarness(t)
	sb := h.create("web", nil)
	h.mustReconcile("web")
	if got := h.requeues(); len(got) != 0 {
		t.Fatalf("requeued %q while the sandbox runs", got)
	}
	h.exit(sb.Metadata.UID, 0)
	h.waitRequeued("web", 0, "the end of the sandbox's run was not noticed")
	// The next reconcile sees the exit; a reconcile of a finished sandbox
	// sets up no watch (which would return and requeue at once, forever).
	h.mustReconcile("web")
	wantPhase(t, h.get("web"), v1alpha1.PhaseSucceeded)
	n := h.requeueCount("web")
	h.mustReconcile("web")
	h.r.Close() // waits for every watch
	h.r = h.newReconciler()
	if got := h.requeueCount("web"); got != n {
		t.Errorf("requeued %d more times after the run ended", got-n)
	}
}

// The image config and the Sandbox spec merge as in Kubernetes.
func TestSandboxDriverSpecFromImageConfig(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/sh\napp:x:1234:5678::/home/app:/bin/sh\n"
	group := "root:x:0:\nstaff:x:50:\n"
	for _, tc := range []struct {
		name    string
		config  images.Config
		files   map[string]string // in the image's top layer
		spec    func(*v1alpha1.SandboxSpec)
		check   func(t *testing.T, s vmdriver.Spec)
		wantErr string // a terminal error containing this
	}{
		{
			name:   "image defaults",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1", "c2"}, Env: []string{"PATH=/bin", "FOO=img"}, WorkingDir: "/srv"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantStrings(t, "args", s.Args, "/ep", "c1", "c2")
				wantStrings(t, "env", s.Env, "PATH=/bin", "FOO=img", "HOSTNAME=box")
				wantEq(t, "workingDir", s.WorkingDir, "/srv")
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{0, 0})
			},
		},
		{
			name:   "command replaces entrypoint and cmd",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Command = []string{"/bin/sh", "-c"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/bin/sh", "-c") },
		},
		{
			name:   "command and args",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Command = []string{"/bin/sh"}; s.Args = []string{"-c", "true"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/bin/sh", "-c", "true") },
		},
		{
			name:   "args replace cmd",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Args = []string{"a1"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/ep", "a1") },
		},
		{
			name:   "env overrides by name",
			config: images.Config{Cmd: []string{"c"}, Env: []string{"PATH=/bin", "FOO=img", "BAR=img"}},
			spec: func(s *v1alpha1.SandboxSpec) {
				s.Env = []v1alpha1.EnvVar{{Name: "FOO", Value: "sb"}, {Name: "NEW", Value: "1"}}
			},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantStrings(t, "env", s.Env, "PATH=/bin", "BAR=img", "HOSTNAME=box", "FOO=sb", "NEW=1")
			},
		},
		{
			name:   "workingDir from the sandbox",
			config: images.Config{Cmd: []string{"c"}, WorkingDir: "/srv"},
			spec:   func(s *v1alpha1.SandboxSpec) { s.WorkingDir = "/work" },
			check:  func(t *testing.T, s vmdriver.Spec) { wantEq(t, "workingDir", s.WorkingDir, "/work") },
		},
		{
			name:   "workingDir defaults to /",
			config: images.Config{Cmd: []string{"c"}},
			check:  func(t *testing.T, s vmdriver.Spec) { wantEq(t, "workingDir", s.WorkingDir, "/") },
		},
		{
			name:   "numeric user and group",
			config: images.Config{Cmd: []string{"c"}, User: "1000:1000"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1000, 1000})
			},
		},
		{
			name:   "numeric user alone",
			config: images.Config{Cmd: []string{"c"}, User: "1001"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1001, 1001})
			},
		},
		{
			name:   "named user from /etc/passwd",
			config: images.Config{Cmd: []string{"c"}, User: "app"},
			files:  map[string]string{"etc/passwd": passwd},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1234, 5678})
			},
		},
		{
			name:   "named user and group",
			config: images.Config{Cmd: []string{"c"}, User: "app:staff"},
			files:  map[string]string{"etc/passwd": passwd, "etc/group": group},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1234, 50})
			},
		},
		{
			name:    "unknown user",
			config:  images.Config{Cmd: []string{"c"}, User: "nobody"},
			files:   map[string]string{"etc/passwd": passwd},
			wantErr: `"nobody" not found in /etc/passwd`,
		},
		{
			name:    "named user without /etc/passwd",
			config:  images.Config{Cmd: []string{"c"}, User: "app"},
			wantErr: "no /etc/passwd",
		},
		{
			name:    "nothing to run",
			config:  images.Config{Env: []string{"PATH=/bin"}},
			wantErr: "no entrypoint or cmd",
		},
		{
			name:   "resources and volumes",
			config: images.Config{Cmd: []string{"c"}},
			spec: func(s *v1alpha1.SandboxSpec) {
				s.Resources = v1alpha1.ResourceRequirements{CPUs: "0.5", Memory: "512Mi", PIDs: 64}
				s.Volumes = []v1alpha1.Volume{{HostPath: "/data", MountPath: "/mnt", ReadOnly: true}}
			},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "resources", [3]int64{s.MemoryBytes, s.MilliCPUs, s.PIDs}, [3]int64{512 << 20, 500, 64})
				if len(s.Mounts) != 1 || s.Mounts[0] != (vmdriver.Mount{HostPath: "/data", Path: "/mnt", ReadOnly: true}) {
					t.Errorf("mounts = %+v", s.Mounts)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// A lower layer with an /etc/passwd the top layer's shadows.
			lower := h.mkLayer("lower", map[string]string{"etc/passwd": "app:x:1:1::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"})
			top := h.mkLayer("top", tc.files)
			layers := []string{top}
			if tc.files != nil {
				layers = []string{lower, top}
			}
			const ref = "registry.test/custom:1"
			h.imgs.set(&images.Image{Ref: ref, Digest: "sha256:" + strings.Repeat("c", 64), Config: tc.config, Layers: layers})
			h.create("box", func(sb *v1alpha1.Sandbox) {
				sb.Spec.Image = ref
				if tc.spec != nil {
					tc.spec(&sb.Spec)
				}
			})
			_, err := h.reconcile("box")
			if tc.wantErr != "" {
				if !isTerminal(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Reconcile = %v, want a terminal error containing %q", err, tc.wantErr)
				}
				wantCalls(t, "invalid", h.drv.Mutations())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			specs := h.drv.Created()
			if len(specs) != 1 {
				t.Fatalf("created %d specs", len(specs))
			}
			if !slices.Equal(specs[0].Layers, layers) {
				t.Errorf("layers = %q, want %q", specs[0].Layers, layers)
			}
			tc.check(t, specs[0])
		})
	}
}

func wantStrings(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func wantEq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
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

// A panic is told as an event on its sandbox, but not on one that is gone
// (the event would outlive it).
func TestSandboxRecordPanic(t *testing.T) {
	h := newHarness(t)
	h.create("web", nil)
	h.r.Events.PanicRecorder(h.st)(key("web"), "boom")
	h.r.Events.PanicRecorder(h.st)(key("gone"), "boom")
	if n := h.eventCount("web", ReasonPanic); n != 1 {
		t.Errorf("%d ReconcilePanic events on an existing sandbox, want 1", n)
	}
	if evs := h.events("gone"); len(evs) != 0 {
		t.Errorf("events recorded for a sandbox that does not exist: %+v", evs)
	}
}

// What the driver finds risky about a sandbox's volumes is told in Warning
// events, once, at creation (vmdriver/container tests what it finds).
func TestSandboxWarnsOfExposedVolumes(t *testing.T) {
	h := newHarness(t)
	adv := &advisingDriver{Fake: h.drv, warnings: []string{"volume /open: other host users can enter /srv/open"}}
	h.r.Drivers = vmdriver.NewSet("", adv)
	h.create("web", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Volumes = []v1alpha1.Volume{{HostPath: "/srv/open", MountPath: "/open"}}
	})
	h.mustReconcile("web")
	h.mustReconcile("web")
	if msgs := h.eventMessages("web", ReasonVolumeExposed); !slices.Equal(msgs, adv.warnings) {
		t.Fatalf("VolumeExposed events %q, want %q", msgs, adv.warnings)
	}
	if len(adv.asked) != 1 || len(adv.asked[0].Mounts) != 1 || adv.asked[0].Mounts[0].HostPath != "/srv/open" {
		t.Errorf("driver asked about %+v, want the sandbox's volume once", adv.asked)
	}
}

// advisingDriver is a fake driver with a vmdriver.VolumeAdvisor.
type advisingDriver struct {
	*drivertest.Fake
	warnings []string
	asked    []vmdriver.Spec
}

func (d *advisingDriver) VolumeWarnings(spec vmdriver.Spec) []string {
	d.asked = append(d.asked, spec)
	return d.warnings
}
