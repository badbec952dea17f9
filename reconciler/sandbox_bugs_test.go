package reconciler

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/store"
)

// A spec change that lands while a reconcile is starting the sandbox must
// still reach the sandbox. Before writeStatus retried on a conflict (with
// SandboxReconciler.Conflict set), the status write failed, status.specHash
// was never recorded, and the next reconcile found the sandbox running with
// an empty specHash and "adopted" it under the new spec's hash although it
// ran the old spec; nothing restarted it after that.
func TestSandboxSpecChangeDuringStartIsNotLost(t *testing.T) {
	h := newHarness(t)
	h.create("web", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{{Name: "MODE", Value: "one"}}
	})
	updated := false
	h.drv.OnStart(func(string) {
		if updated {
			return
		}
		updated = true
		// msbctl apply of an edited manifest, while runc starts the sandbox.
		h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Env[0].Value = "two" })
	})
	// The status write of this reconcile races the update; whether it
	// retries on the fresh object or fails with a conflict, the next
	// reconciles must bring the sandbox to MODE=two.
	if _, err := h.reconcile("web"); err != nil && !errors.Is(err, store.ErrConflict) {
		t.Fatalf("first Reconcile: %v", err)
	}
	h.drv.OnStart(nil)

	for range 3 {
		h.mustReconcile("web")
	}
	specs := h.drv.Created()
	running := specs[len(specs)-1]
	got := h.get("web")
	if !slices.Contains(running.Env, "MODE=two") {
		t.Errorf("the sandbox still runs env %q although the Sandbox (generation %d) says MODE=two; "+
			"status claims specHash %s, observedGeneration %d, Ready %s; driver calls %q",
			running.Env, got.Metadata.Generation, got.Status.SpecHash, got.Status.ObservedGeneration,
			v1alpha1.FindCondition(got.Status.Conditions, v1alpha1.ConditionReady).Status, h.drv.Mutations())
	}
}

// The image a sandbox started with is the one it keeps until it starts
// again. A tag that moves in the image cache (another Sandbox with
// imagePullPolicy Always, or `msbctl image pull`, re-resolved it) must not
// kill a running sandbox, nor bring back one that finished under
// restartPolicy Never, and status.imageDigest keeps naming what ran.
//
// "same config" passes since specHash leaves layer paths out; "new config"
// still fails: the hash covers the argv, env, workingDir and user merged
// from the re-resolved image's config, so any config change in the new
// image (a version in ENV) restarts the sandbox.
func TestSandboxMovedTagDoesNotRestart(t *testing.T) {
	// moveTag points testImage at a new image; with newEnv its config
	// differs too, as it does for most new builds (a version in ENV, a
	// changed PATH).
	moveTag := func(h *harness, newEnv bool) {
		env := []string{"PATH=/usr/bin:/bin"}
		if newEnv {
			env = append(env, "APP_VERSION=2")
		}
		h.imgs.set(&images.Image{
			Ref:    testImage,
			Digest: "sha256:" + strings.Repeat("d", 64),
			Config: images.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"serve"}, Env: env, WorkingDir: "/srv"},
			Layers: []string{h.mkLayer("v2", nil)},
		})
	}
	for _, newEnv := range []bool{false, true} {
		name := "same config"
		if newEnv {
			name = "new config"
		}
		t.Run(name, func(t *testing.T) { testMovedTag(t, func(h *harness) { moveTag(h, newEnv) }) })
	}
}

func testMovedTag(t *testing.T, moveTag func(*harness)) {

	t.Run("running", func(t *testing.T) {
		h := newHarness(t)
		h.create("web", nil) // imagePullPolicy IfNotPresent: a running sandbox only looks in the cache
		h.mustReconcile("web")
		h.drv.Reset()

		moveTag(h) // the cache now maps the tag to a newer image
		h.mustReconcile("web")
		if m := h.drv.Mutations(); len(m) != 0 {
			t.Errorf("a running sandbox was restarted because its image tag moved: driver calls %q, events %q",
				m, h.reasons("web"))
		}
		if got := h.get("web"); got.Status.ImageDigest != testDigest {
			t.Errorf("imageDigest = %s, want %s: status no longer names the image that runs", got.Status.ImageDigest, testDigest)
		}
	})

	t.Run("finished restartPolicy Never", func(t *testing.T) {
		h := newHarness(t)
		sb := h.create("job", func(sb *v1alpha1.Sandbox) {
			sb.Spec.RestartPolicy = v1alpha1.RestartNever
			sb.Spec.ImagePullPolicy = v1alpha1.PullAlways
		})
		h.mustReconcile("job")
		h.exit(sb.Metadata.UID, 0)
		h.mustReconcile("job")
		wantPhase(t, h.get("job"), v1alpha1.PhaseSucceeded)
		h.drv.Reset()

		moveTag(h) // a new image is pushed under the tag; a resync reconciles
		h.mustReconcile("job")
		got := h.get("job")
		if m := h.drv.Mutations(); slices.Contains(m, "Start") || got.Status.Phase != v1alpha1.PhaseSucceeded {
			t.Errorf("a Succeeded sandbox with restartPolicy Never ran again after its tag moved: phase %s, driver calls %q",
				got.Status.Phase, m)
		}
	})
}

// AgentErr only stops msbd from starting sandboxes; sandboxes already
// running (adopted after an msbd restart with a broken --agent) keep being
// watched: Ready stays True while they run, and when the command ends the
// final phase is recorded. Today the AgentErr check sits before the
// running/stopped handling in sync, so a running sandbox turns Ready False
// AgentMissing and one that ends stays phase Running for good (a
// TerminalError, so not even retried).
func TestSandboxAgentMissingStillWatchesRunningSandboxes(t *testing.T) {
	h := newHarness(t)
	sb := h.create("web", nil)
	h.mustReconcile("web")

	h.restartMsbd()
	h.r.AgentErr = errors.New("msb-agent not found")
	h.drv.Reset()
	_, err := h.reconcile("web")
	got := h.get("web")
	if err != nil || v1alpha1.FindCondition(got.Status.Conditions, v1alpha1.ConditionReady).Status != v1alpha1.ConditionTrue {
		t.Errorf("running sandbox after an msbd restart without agent: Reconcile = %v, Ready %+v; want it adopted and Ready",
			err, v1alpha1.FindCondition(got.Status.Conditions, v1alpha1.ConditionReady))
	}

	h.exit(sb.Metadata.UID, 3)
	h.reconcile("web")
	got = h.get("web")
	if got.Status.Phase != v1alpha1.PhaseFailed || got.Status.ExitCode == nil {
		t.Errorf("command exited 3 (restartPolicy Never) with the agent missing: phase %s, exitCode %s; want Failed, 3",
			got.Status.Phase, ptrString(got.Status.ExitCode))
	}
	wantCalls(t, "agent missing", h.drv.Mutations())
}
