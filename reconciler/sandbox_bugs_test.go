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
// still reach the sandbox. The reconcile's status write then conflicts, so
// status.specHash is never recorded; the next reconcile finds the sandbox
// running with an empty specHash and "adopts" it under the new spec's hash,
// although it runs the old spec. Nothing restarts it after that.
func TestSandboxSpecChangeDuringStartIsNotLost(t *testing.T) {
	h := newHarness(t)
	h.create("web", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{{Name: "MODE", Value: "one"}}
	})
	updated := false
	h.drv.onStart = func(string) {
		if updated {
			return
		}
		updated = true
		// msbctl apply of an edited manifest, while runc starts the sandbox.
		h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Env[0].Value = "two" })
	}
	_, err := h.reconcile("web")
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("first Reconcile = %v, want the status write to conflict", err)
	}
	h.drv.onStart = nil

	for range 3 {
		h.mustReconcile("web")
	}
	specs := h.drv.createdSpecs()
	running := specs[len(specs)-1]
	got := h.get("web")
	if !slices.Contains(running.Env, "MODE=two") {
		t.Errorf("the sandbox still runs env %q although the Sandbox (generation %d) says MODE=two; "+
			"status claims specHash %s, observedGeneration %d, Ready %s; driver calls %q",
			running.Env, got.Metadata.Generation, got.Status.SpecHash, got.Status.ObservedGeneration,
			v1alpha1.FindCondition(got.Status.Conditions, v1alpha1.ConditionReady).Status, h.drv.mutations())
	}
}

// The image a sandbox started with is the one it keeps until it starts
// again. A tag that moves in the image cache (another Sandbox with
// imagePullPolicy Always, or `msbctl image pull`, re-resolved it) must not
// kill a running sandbox, nor bring back one that finished under
// restartPolicy Never.
func TestSandboxMovedTagDoesNotRestart(t *testing.T) {
	moveTag := func(h *harness) {
		h.imgs.set(&images.Image{
			Ref:    testImage,
			Digest: "sha256:" + strings.Repeat("d", 64),
			Config: images.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"serve"}, Env: []string{"PATH=/usr/bin:/bin"}, WorkingDir: "/srv"},
			Layers: []string{h.mkLayer("v2", nil)},
		})
	}

	t.Run("running", func(t *testing.T) {
		h := newHarness(t)
		h.create("web", nil) // imagePullPolicy IfNotPresent: a running sandbox only looks in the cache
		h.mustReconcile("web")
		h.drv.reset()

		moveTag(h) // the cache now maps the tag to a newer image
		h.mustReconcile("web")
		if m := h.drv.mutations(); len(m) != 0 {
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
		h.drv.exit(t, sb.Metadata.UID, 0)
		h.mustReconcile("job")
		wantPhase(t, h.get("job"), v1alpha1.PhaseSucceeded)
		h.drv.reset()

		moveTag(h) // a new image is pushed under the tag; a resync reconciles
		h.mustReconcile("job")
		got := h.get("job")
		if m := h.drv.mutations(); slices.Contains(m, "Start") || got.Status.Phase != v1alpha1.PhaseSucceeded {
			t.Errorf("a Succeeded sandbox with restartPolicy Never ran again after its tag moved: phase %s, driver calls %q",
				got.Status.Phase, m)
		}
	})
}
