package reconciler

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
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

	// The harness's host has no microVMs: auto says so once.
	if got, want := h.reasons("web"), []string{ReasonPulled, ReasonCreated, ReasonContainerFallback, ReasonStarted}; !slices.Equal(got, want) {
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
