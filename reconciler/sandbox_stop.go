package reconciler

import (
	"context"
	"errors"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// suspend stops the sandbox but keeps its writable layer.
func (r *SandboxReconciler) suspend(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) error {
	id := sb.Metadata.UID
	// Once suspended (phase recorded, nothing running) there is nothing to do.
	state, err := d.State(ctx, id)
	done := st.Phase == v1alpha1.PhaseSuspended && (errors.Is(err, vmdriver.ErrNotFound) || (err == nil && state.Status == vmdriver.StatusStopped))
	if err == nil && !done {
		why := "operatingMode is Suspended"
		if st.Phase == v1alpha1.PhaseSuspended {
			why = "" // stopped before; only its runtime object is left
		}
		if err := r.stop(ctx, d, sb, why); err != nil {
			if errors.Is(err, errStopping) {
				// Still running, but no longer Ready: a wait for the
				// suspension must not take it for done.
				r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSuspended, "stopping: operatingMode is Suspended")
			}
			return err
		}
		if err := d.Delete(ctx, id, false); err != nil {
			return err
		}
	}
	r.forgetAgent(id)
	if st.Phase != v1alpha1.PhaseSuspended {
		r.event(sb, v1alpha1.EventNormal, ReasonSuspended, "Sandbox suspended; its writable layer is kept")
		r.unpublish(sb, st)
	}
	st.Phase = v1alpha1.PhaseSuspended
	st.PID = 0
	st.RestartCount = 0
	st.SpecHash = ""
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSuspended, "operatingMode is Suspended")
	return nil
}

// expire stops an expired sandbox and frees everything it held; the object
// stays (phase Failed, reason Expired) so users can see what happened.
func (r *SandboxReconciler) expire(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) error {
	first := st.Phase != v1alpha1.PhaseFailed || cond(st, v1alpha1.ConditionReady) != ReasonExpired
	why := ""
	if first {
		why = "its lifecycle expired"
	}
	if err := r.teardown(ctx, sb, why); err != nil {
		if errors.Is(err, errStopping) {
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonExpired, "stopping: the sandbox's lifecycle expired at "+st.ExpiresAt.Format(time.RFC3339))
		}
		return err
	}
	if first {
		r.event(sb, v1alpha1.EventNormal, ReasonExpired, "Sandbox expired at "+st.ExpiresAt.Format(time.RFC3339))
	}
	st.Phase = v1alpha1.PhaseFailed
	st.PID = 0
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonExpired, "the sandbox's lifecycle expired at "+st.ExpiresAt.Format(time.RFC3339))
	return nil
}

// finalize removes everything the sandbox owned, then its finalizer.
func (r *SandboxReconciler) finalize(ctx context.Context, sb *v1alpha1.Sandbox) error {
	if !hasFinalizer(sb) {
		return nil
	}
	r.dropBackground("pull/" + sb.Metadata.UID)
	r.forgetPull(sb.Metadata.UID)
	if err := r.teardown(ctx, sb, "it is being deleted"); err != nil {
		return err
	}
	r.dropBackground("stop/" + sb.Metadata.UID)
	var keep []string
	for _, f := range sb.Metadata.Finalizers {
		if f != v1alpha1.FinalizerSandbox {
			keep = append(keep, f)
		}
	}
	sb.Metadata.Finalizers = keep
	// The object's events go with it; none may arrive after.
	r.Events.Flush()
	return r.Store.Update(sb)
}

// teardown stops the sandbox (telling why in a Killing event, unless why is
// empty) and removes everything it owned, in every driver that holds it (one
// but for a sandbox caught moving between drivers). A driver other than the
// one the sandbox records that cannot even say whether it holds it is logged
// and skipped: one broken backend must not block deleting every sandbox.
func (r *SandboxReconciler) teardown(ctx context.Context, sb *v1alpha1.Sandbox, why string) error {
	for _, d := range r.Drivers.All() {
		err := r.teardownIn(ctx, d, sb, why)
		var se *stateError
		if errors.As(err, &se) && sb.Status.Driver != "" && sb.Status.Driver != d.Name() {
			r.Log.Warn("cannot tell whether a driver holds a sandbox; skipping it", "sandbox", sb.Metadata.Name, "driver", d.Name(), "err", err)
			continue
		}
		if err != nil {
			return err
		}
	}
	if err := r.detachNetwork(sb.Metadata.UID); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.started, sb.Metadata.UID)
	r.mu.Unlock()
	r.forgetAgent(sb.Metadata.UID)
	return nil
}

// stateError is a driver failing to report a sandbox's state.
type stateError struct{ err error }

func (e *stateError) Error() string { return "reading sandbox state: " + e.err.Error() }
func (e *stateError) Unwrap() error { return e.err }

// teardownIn stops the sandbox in d and removes everything it owned there.
// why is told in a Killing event while it runs.
func (r *SandboxReconciler) teardownIn(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, why string) error {
	id := sb.Metadata.UID
	state, err := d.State(ctx, id)
	if errors.Is(err, vmdriver.ErrNotFound) {
		return nil // nothing left: spare the runtime calls on every resync
	}
	if err != nil {
		return &stateError{err}
	}
	if !state.Status.Alive() {
		why = "" // nothing to kill: no Killing event
	}
	if err := r.stop(ctx, d, sb, why); err != nil && !errors.Is(err, vmdriver.ErrNotFound) {
		return err
	}
	return d.Delete(ctx, id, true)
}

// stop stops the sandbox: SIGTERM, then SIGKILL after StopGrace. The grace
// period runs in the background: if the sandbox has not stopped within
// inlineWait it returns errStopping, and the stop requeues the sandbox when
// it is done. why, if not empty, is told in a Killing event when the stop
// begins.
func (r *SandboxReconciler) stop(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, why string) error {
	id := sb.Metadata.UID
	var onStart func()
	if why != "" {
		onStart = func() { r.event(sb, v1alpha1.EventNormal, ReasonKilling, "Stopping sandbox: "+why) }
	}
	_, err, finished := r.background(ctx, "stop/"+id, "stop", v1alpha1.KeyOf(sb),
		func(ctx context.Context) (any, error) { return nil, d.Stop(ctx, id, r.StopGrace) }, onStart)
	if !finished && err == nil {
		return errStopping
	}
	return err
}

// watchExit requeues the sandbox as soon as its run ends, so exits are seen
// at once rather than at the next resync. One watch per sandbox: a reconcile
// that finds one pending adds none, and every watch that ends requeues, so
// the reconcile after it sets up the next (for a new run) if one is needed.
func (r *SandboxReconciler) watchExit(d vmdriver.Driver, sb *v1alpha1.Sandbox) {
	id, key := sb.Metadata.UID, v1alpha1.KeyOf(sb)
	slot := d.Name() + "/" + id // a sandbox that moved is watched in its new driver at once
	r.mu.Lock()
	if r.watching[slot] || r.ctx.Err() != nil {
		r.mu.Unlock()
		return
	}
	r.watching[slot] = true
	r.closing.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.closing.Done()
		_, err := d.Wait(r.ctx, id)
		r.mu.Lock()
		delete(r.watching, slot)
		r.mu.Unlock()
		if r.ctx.Err() != nil {
			return // msbd stops: the next one adopts the sandbox
		}
		if err != nil && !errors.Is(err, vmdriver.ErrNotFound) {
			// Not a verdict on the sandbox: look again soon, without
			// spinning on a driver that keeps failing.
			r.Log.Warn("waiting for a sandbox's run to end", "sandbox", sb.Metadata.Name, "driver", d.Name(), "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		r.Requeue(key)
	}()
}
