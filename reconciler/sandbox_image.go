package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
)

// pulledImage is an image resolved for a sandbox's next start.
type pulledImage struct {
	tag string // policy and reference
	img *images.Image
	at  time.Time
}

// recentPull returns the image resolved for the sandbox under tag since its
// last start, if that was within staleAfter.
func (r *SandboxReconciler) recentPull(id, tag string) *images.Image {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pulled[id]; ok && p.tag == tag && time.Since(p.at) < staleAfter {
		return p.img
	}
	return nil
}

func (r *SandboxReconciler) forgetPull(id string) {
	r.mu.Lock()
	delete(r.pulled, id)
	r.mu.Unlock()
}

// image resolves the Sandbox's image under policy and records ImageReady:
// Unknown/Pulling while a pull runs, then True/Pulled, False/PullFailed (with
// the registry's message; retried with backoff) or False/InvalidImage (a
// hostile or malformed image; not retried until the spec changes).
func (r *SandboxReconciler) image(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, policy images.PullPolicy) (*images.Image, error) {
	ref := sb.Spec.Image
	tag := string(policy) + " " + ref
	if img := r.recentPull(sb.Metadata.UID, tag); img != nil {
		// Pulled for this start already (a stop of the old run came
		// between): not again, which with Always would be another trip.
		r.condition(st, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled, "")
		return img, nil
	}
	val, err, finished := r.background(ctx, "pull/"+sb.Metadata.UID, tag, v1alpha1.KeyOf(sb),
		func(ctx context.Context) (any, error) { return r.Images.Pull(ctx, ref, policy, nil) }, nil)
	if !finished {
		if err != nil {
			return nil, err // ctx ended
		}
		// A real pull: it goes on without this worker and requeues the
		// sandbox when it ends; watchers see Pulling meanwhile.
		if c := v1alpha1.FindCondition(st.Conditions, v1alpha1.ConditionImageReady); c == nil || c.Reason != ReasonPulling {
			r.event(sb, v1alpha1.EventNormal, ReasonPulling, "Pulling image "+ref)
		}
		r.condition(st, v1alpha1.ConditionImageReady, v1alpha1.ConditionUnknown, ReasonPulling, "pulling image "+ref)
		return nil, errPulling
	}
	img, _ := val.(*images.Image)
	if err != nil {
		var inv *images.InvalidImageError
		if errors.As(err, &inv) {
			msg := fmt.Sprintf("image %s refused: %v", ref, err)
			r.condition(st, v1alpha1.ConditionImageReady, v1alpha1.ConditionFalse, ReasonInvalidImage, msg)
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonInvalidImage, msg)
			r.event(sb, v1alpha1.EventWarning, ReasonInvalidImage, msg)
			return nil, Terminal(errors.New(msg))
		}
		msg := fmt.Sprintf("pulling image %s: %v", ref, err)
		r.condition(st, v1alpha1.ConditionImageReady, v1alpha1.ConditionFalse, ReasonPullFailed, msg)
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonPullFailed, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonPullFailed, msg)
		return nil, errors.New(msg)
	}
	r.mu.Lock()
	r.pulled[sb.Metadata.UID] = pulledImage{tag: tag, img: img, at: time.Now()}
	r.mu.Unlock()
	// status.imageDigest names what the sandbox runs; it changes when the
	// sandbox (re)starts on this image (see start), not when a tag moves.
	if c := v1alpha1.FindCondition(st.Conditions, v1alpha1.ConditionImageReady); c == nil || c.Status != v1alpha1.ConditionTrue {
		r.event(sb, v1alpha1.EventNormal, ReasonPulled, fmt.Sprintf("Image %s is ready (%s)", ref, img.Digest))
	}
	if st.ImageDigest == "" {
		st.ImageDigest = img.Digest
	}
	r.condition(st, v1alpha1.ConditionImageReady, v1alpha1.ConditionTrue, ReasonPulled, "")
	return img, nil
}
