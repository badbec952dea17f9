package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/vmdriver"
)

// Store is what the controllers need from the store.
type Store interface {
	Get(kind, namespace, name string, into v1alpha1.Object) error
	Update(obj v1alpha1.Object) error
	UpdateStatus(obj v1alpha1.Object) error
	RecordEvent(ref v1alpha1.ObjectReference, eventType, reason, message string) error
}

// Images resolves an image reference to unpacked layers.
type Images interface {
	Pull(ctx context.Context, ref string, policy images.PullPolicy, progress func(images.Progress)) (*images.Image, error)
}

// Event reasons, stable for tools to match on.
const (
	ReasonPulling       = "Pulling"
	ReasonPulled        = "Pulled"
	ReasonPullFailed    = "PullFailed"
	ReasonInvalidImage  = "InvalidImage"
	ReasonCreated       = "Created"
	ReasonStarted       = "Started"
	ReasonAdopted       = "Adopted"
	ReasonKilling       = "Killing"
	ReasonBackOff       = "BackOff"
	ReasonFailed        = "Failed"
	ReasonCompleted     = "Completed"
	ReasonSuspended     = "Suspended"
	ReasonExpired       = "Expired"
	ReasonSecretError   = "SecretNotFound"
	ReasonAgentMissing  = "AgentMissing"
	ReasonUpdating      = "Updating"
	ReasonVolumeExposed = "VolumeExposed"
	ReasonIsolation     = "IsolationUnavailable"
	ReasonPanic         = "ReconcilePanic"
)

// SandboxReconciler converges Sandbox objects.
type SandboxReconciler struct {
	Store Store
	// NotFound and Conflict classify store errors (store.ErrNotFound,
	// store.ErrConflict), so this package needs no store import.
	NotFound func(error) bool
	Conflict func(error) bool
	Images   Images
	Driver   vmdriver.Driver
	// AgentPath is the static msb-agent; AgentErr says why it is unusable.
	AgentPath string
	AgentErr  error
	// RestartBackoff is the first delay before restarting a finished sandbox
	// (doubled per restart, capped at RestartBackoffMax).
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// DefaultMemoryBytes and DefaultPIDs limit sandboxes whose spec sets no
	// limit: untrusted code gets no unbounded share of the host (0: none).
	DefaultMemoryBytes int64
	DefaultPIDs        int64
	// StopGrace is how long a sandbox gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// Requeue is called to look at a key again (when a sandbox's init exits).
	Requeue func(key string)
	// BeforeCreate, if set, runs before a sandbox is created in the
	// runtime; an error fails the start. msbd records there how far the
	// store had got, so that a store later restored from an older backup is
	// not mistaken for one whose sandboxes were deleted.
	BeforeCreate func() error
	Log          *slog.Logger

	mu       sync.Mutex
	watching map[string]int // sandbox uid → pid being watched for exit
	started  map[string]bool
	ops      map[string]*bgOp       // background work by slot (see background)
	pulled   map[string]pulledImage // sandbox uid → image resolved for its next start

	once       sync.Once
	events     chan pendingEvent
	eventsDone chan struct{}
}

type pendingEvent struct {
	ref                  v1alpha1.ObjectReference
	typ, reason, message string
	flushed              chan struct{} // a marker: closed when reached
}

func (r *SandboxReconciler) init() {
	r.once.Do(func() {
		r.watching = map[string]int{}
		r.started = map[string]bool{}
		r.ops = map[string]*bgOp{}
		r.pulled = map[string]pulledImage{}
		// Events are written by one goroutine, in order, off the reconcile
		// path: each is a durable store write, and a sandbox start records
		// several.
		r.events = make(chan pendingEvent, 1024)
		r.eventsDone = make(chan struct{})
		go func() {
			defer close(r.eventsDone)
			for ev := range r.events {
				if ev.flushed != nil {
					close(ev.flushed)
					continue
				}
				if err := r.Store.RecordEvent(ev.ref, ev.typ, ev.reason, ev.message); err != nil {
					r.Log.Warn("recording event", "object", ev.ref.Name, "reason", ev.reason, "err", err)
				}
			}
		}()
	})
}

// flushEvents waits until every event recorded so far is in the store.
func (r *SandboxReconciler) flushEvents() {
	ch := make(chan struct{})
	r.events <- pendingEvent{flushed: ch}
	<-ch
}

// Close cancels the pulls in flight and writes the events still pending.
// Call it after the controller stopped.
func (r *SandboxReconciler) Close() {
	r.init()
	r.mu.Lock()
	for slot, op := range r.ops {
		op.cancel()
		delete(r.ops, slot)
	}
	r.mu.Unlock()
	close(r.events)
	<-r.eventsDone
}

// Reconcile implements Reconciler for keys "Sandbox/ns/name".
func (r *SandboxReconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	r.init()
	_, ns, name, err := v1alpha1.SplitKey(key)
	if err != nil {
		return Result{}, Terminal(err)
	}
	sb := &v1alpha1.Sandbox{}
	if err := r.Store.Get(v1alpha1.KindSandbox, ns, name, sb); err != nil {
		if r.NotFound(err) {
			return Result{}, nil // gone; its finalizer already cleaned up
		}
		return Result{}, err
	}
	if sb.Metadata.DeletionTimestamp != nil {
		if err := r.finalize(ctx, sb); !inProgress(err) {
			return Result{}, err
		}
		return Result{}, nil // the stop requeues the sandbox
	}
	if !hasFinalizer(sb) {
		sb.Metadata.Finalizers = append(sb.Metadata.Finalizers, v1alpha1.FinalizerSandbox)
		if err := r.Store.Update(sb); err != nil {
			return Result{}, err
		}
	}
	st := copyStatus(sb.Status)
	res, rerr := r.sync(ctx, sb, &st)
	if inProgress(rerr) {
		rerr = nil // background work requeues the sandbox when it ends
	}
	st.ObservedGeneration = sb.Metadata.Generation
	if err := r.writeStatus(sb, st); err != nil {
		return Result{}, err
	}
	return res, rerr
}

// sync does one step for a live Sandbox and fills st with what it saw.
func (r *SandboxReconciler) sync(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) (Result, error) {
	id := sb.Metadata.UID
	now := time.Now()
	if st.Phase == "" {
		st.Phase = v1alpha1.PhasePending
	}
	st.Driver = r.Driver.Name()

	if sb.Spec.Isolation == v1alpha1.IsolationMicroVM && r.Driver.Isolation() != string(v1alpha1.IsolationMicroVM) {
		msg := "isolation: microvm needs KVM (/dev/kvm) and libkrun, and this host has neither; use isolation: auto or container"
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonIsolation, msg)
		st.Phase = v1alpha1.PhaseFailed
		r.event(sb, v1alpha1.EventWarning, ReasonIsolation, msg)
		return Result{}, Terminal(errors.New(msg))
	}

	// Expiry: ttl counts from creation; shutdownTime is absolute.
	if exp := expiresAt(sb); exp != nil {
		st.ExpiresAt = exp
		if !now.Before(*exp) {
			return Result{}, r.expire(ctx, sb, st)
		}
	}
	res := Result{}
	if st.ExpiresAt != nil {
		res.RequeueAfter = time.Until(*st.ExpiresAt) + 10*time.Millisecond
	}

	if sb.Spec.OperatingMode == v1alpha1.ModeSuspended {
		if c := v1alpha1.FindCondition(st.Conditions, v1alpha1.ConditionImageReady); c == nil || c.Status != v1alpha1.ConditionTrue {
			if _, err := r.image(ctx, sb, st, images.PullIfNotPresent); errors.Is(err, errPulling) {
				return res, nil
			} else if err != nil {
				return res, err
			}
		}
		return res, r.suspend(ctx, sb, st)
	}

	state, err := r.Driver.State(ctx, id)
	notFound := errors.Is(err, vmdriver.ErrNotFound)
	if err != nil && !notFound {
		return res, fmt.Errorf("reading sandbox state: %w", err)
	}
	// The common case on every resync: a sandbox running the spec it was
	// started with. Nothing to resolve (image, secrets): just observe it.
	hash := r.specHash(sb)
	running := state.Status == "running" || state.Status == "paused"
	if running && (st.SpecHash == hash || st.SpecHash == "") {
		r.observeRunning(sb, st, state, hash)
		return res, nil
	}
	// A changed spec is not Ready until the sandbox runs it: what it ran
	// before (Ready, or a final phase) must not answer a wait for the new
	// one while the image is pulled or the old run is stopped.
	if !notFound && st.SpecHash != "" && st.SpecHash != hash {
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonUpdating, "the spec changed: the sandbox restarts with it")
		if !running {
			st.Phase = v1alpha1.PhasePending
		}
	}
	// imagePullPolicy applies when a sandbox (re)starts, as in Kubernetes; one
	// that finished for good only reads the cache.
	policy := images.PullPolicy(sb.Spec.ImagePullPolicy)
	finishedForGood := !notFound && state.Status == "stopped" && st.SpecHash == hash && !wantsRestart(sb, exitCode(state))
	if policy == "" || finishedForGood {
		policy = images.PullIfNotPresent
	}
	t0 := time.Now()
	img, err := r.image(ctx, sb, st, policy)
	if errors.Is(err, errPulling) {
		return res, nil // the pull requeues the sandbox when it ends
	}
	if err != nil {
		return res, err
	}
	r.Log.Debug("resolved image", "sandbox", sb.Metadata.Name, "image", sb.Spec.Image, "took", time.Since(t0))

	spec, err := r.driverSpec(sb, img)
	if err != nil {
		var se *secretError
		if errors.As(err, &se) {
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSecretError, err.Error())
			r.event(sb, v1alpha1.EventWarning, ReasonSecretError, err.Error())
		}
		return res, err
	}

	// A sandbox runs the spec it was started with (status.specHash). A changed
	// runtime spec (image, command, env, resources, ...) restarts it on its
	// existing writable layer; so does leaving Suspended, or a finished run
	// whose spec changed.
	if !notFound && st.SpecHash != hash {
		if running {
			if err := r.stop(ctx, sb, "its spec changed"); err != nil {
				return res, err
			}
		}
		if err := r.Driver.Delete(ctx, id, false); err != nil {
			return res, err
		}
		notFound = true
		st.RestartCount = 0
	}

	if notFound || state.Status == "" || state.Status == "created" {
		return res, r.start(ctx, sb, st, spec, hash, img.Digest, false)
	}
	// stopped: the main command ended
	return r.finished(ctx, sb, st, spec, hash, img.Digest, state, res)
}

// observeRunning records a sandbox that runs its current spec, adopting it
// when this msbd did not start it (after a restart).
func (r *SandboxReconciler) observeRunning(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, state vmdriver.State, hash string) {
	id := sb.Metadata.UID
	st.SpecHash = hash // "" when started by us before status was written
	r.mu.Lock()
	ours := r.started[id]
	r.started[id] = true
	r.mu.Unlock()
	if !ours {
		r.event(sb, v1alpha1.EventNormal, ReasonAdopted, fmt.Sprintf("Adopted running sandbox (pid %d) after msbd restart", state.PID))
	}
	st.Phase = v1alpha1.PhaseRunning
	st.PID = state.PID
	st.Isolation = v1alpha1.Isolation(r.Driver.Isolation())
	if st.StartedAt == nil && !state.StartedAt.IsZero() {
		t := state.StartedAt
		st.StartedAt = &t
	}
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running", "")
	r.watchExit(sb, state.PID)
}

// start creates and starts the sandbox and waits for its agent.
func (r *SandboxReconciler) start(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec vmdriver.Spec, hash, digest string, restart bool) error {
	id := sb.Metadata.UID
	if r.AgentErr != nil {
		// Only starting needs the agent; running sandboxes stay watched.
		msg := "cannot start sandboxes: " + r.AgentErr.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonAgentMissing, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonAgentMissing, msg)
		return Terminal(errors.New(msg))
	}
	// A new run: what was learned about stopping or pulling for the old
	// one must not answer for it.
	r.dropBackground("stop/" + id)
	r.forgetPull(id)
	t0 := time.Now()
	if r.BeforeCreate != nil {
		if err := r.BeforeCreate(); err != nil {
			msg := "not starting: recording the store's progress for orphan collection failed: " + err.Error()
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonFailed, msg)
			r.event(sb, v1alpha1.EventWarning, ReasonFailed, msg)
			return errors.New(msg)
		}
	}
	if err := r.Driver.Create(ctx, spec); err != nil {
		msg := "creating sandbox: " + err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonFailed, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonFailed, msg)
		return errors.New(msg)
	}
	if !restart {
		r.event(sb, v1alpha1.EventNormal, ReasonCreated, fmt.Sprintf("Created sandbox with %s isolation", r.Driver.Isolation()))
		r.warnExposedVolumes(sb, spec)
	}
	r.mu.Lock()
	r.started[id] = true
	r.mu.Unlock()
	t1 := time.Now()
	if err := r.Driver.Start(ctx, id); err != nil {
		msg := "starting sandbox: " + err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonFailed, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonFailed, msg)
		return errors.New(msg)
	}
	now := time.Now().UTC()
	st.StartedAt = &now
	st.ImageDigest = digest
	st.FinishedAt = nil
	st.ExitCode = nil
	st.SpecHash = hash
	st.Isolation = v1alpha1.Isolation(r.Driver.Isolation())
	st.Phase = v1alpha1.PhaseRunning
	r.Log.Debug("started sandbox", "sandbox", sb.Metadata.Name, "create", t1.Sub(t0), "start", time.Since(t1))
	// Ready means started, as for a Kubernetes container without a readiness
	// probe; exec waits the few milliseconds until the agent listens.
	state, err := r.Driver.State(ctx, id)
	if err == nil && state.Status == "running" {
		st.PID = state.PID
		r.watchExit(sb, state.PID)
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running", "")
	} else {
		r.Requeue(v1alpha1.KeyOf(sb))
	}
	if restart {
		r.event(sb, v1alpha1.EventNormal, ReasonStarted, fmt.Sprintf("Restarted sandbox (restart %d)", st.RestartCount))
	} else {
		r.event(sb, v1alpha1.EventNormal, ReasonStarted, "Started sandbox")
	}
	return nil
}

// finished handles a sandbox whose main command ended: restart it per
// restartPolicy with backoff, or record the final phase.
func (r *SandboxReconciler) finished(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec vmdriver.Spec, hash, digest string, state vmdriver.State, res Result) (Result, error) {
	code := exitCode(state)
	c32 := int32(code)
	first := st.FinishedAt == nil || st.ExitCode == nil
	st.ExitCode = &c32
	st.PID = 0
	if first {
		now := time.Now().UTC()
		st.FinishedAt = &now
	}
	if !wantsRestart(sb, code) {
		if code == 0 {
			st.Phase = v1alpha1.PhaseSucceeded
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonCompleted, "the sandbox command exited with code 0")
			if first {
				r.event(sb, v1alpha1.EventNormal, ReasonCompleted, "Sandbox command exited with code 0")
			}
		} else {
			st.Phase = v1alpha1.PhaseFailed
			msg := fmt.Sprintf("the sandbox command exited with code %d", code)
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, "Error", msg)
			if first {
				r.event(sb, v1alpha1.EventWarning, ReasonFailed, "Sandbox command exited with code "+strconv.Itoa(code))
			}
		}
		return res, nil
	}
	delay := r.RestartBackoff
	// As in Kubernetes, a run that lasted long enough resets the backoff
	// (restartCount keeps counting).
	longRun := st.StartedAt != nil && st.FinishedAt.Sub(*st.StartedAt) > backoffResetAfter
	for i := int32(0); i < st.RestartCount && delay < r.RestartBackoffMax && !longRun; i++ {
		delay *= 2
	}
	if delay > r.RestartBackoffMax {
		delay = r.RestartBackoffMax
	}
	wait := time.Until(st.FinishedAt.Add(delay))
	if wait > 0 {
		msg := fmt.Sprintf("Back-off %s restarting sandbox (exit code %d)", delay.Round(time.Millisecond), code)
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonBackOff, msg)
		if first {
			r.event(sb, v1alpha1.EventWarning, ReasonBackOff, msg)
		}
		st.Phase = v1alpha1.PhaseRunning
		if res.RequeueAfter == 0 || wait < res.RequeueAfter {
			res.RequeueAfter = wait
		}
		return res, nil
	}
	if err := r.Driver.Delete(ctx, sb.Metadata.UID, false); err != nil {
		return res, err
	}
	st.RestartCount++
	return res, r.start(ctx, sb, st, spec, hash, digest, true)
}

// exitCode is how a stopped sandbox's command ended.
func exitCode(state vmdriver.State) int {
	if !state.Exited {
		return 137 // killed without the agent writing its code
	}
	return state.ExitCode
}

// wantsRestart applies restartPolicy to an exit code.
func wantsRestart(sb *v1alpha1.Sandbox, code int) bool {
	return sb.Spec.RestartPolicy == v1alpha1.RestartAlways ||
		(sb.Spec.RestartPolicy == v1alpha1.RestartOnFailure && code != 0)
}

// suspend stops the sandbox but keeps its writable layer.
func (r *SandboxReconciler) suspend(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) error {
	id := sb.Metadata.UID
	// Once suspended (phase recorded, nothing running) there is nothing to do.
	state, err := r.Driver.State(ctx, id)
	done := st.Phase == v1alpha1.PhaseSuspended && (errors.Is(err, vmdriver.ErrNotFound) || (err == nil && state.Status == "stopped"))
	if err == nil && !done {
		why := "operatingMode is Suspended"
		if st.Phase == v1alpha1.PhaseSuspended {
			why = "" // stopped before; only its runtime object is left
		}
		if err := r.stop(ctx, sb, why); err != nil {
			if errors.Is(err, errStopping) {
				// Still running, but no longer Ready: a wait for the
				// suspension must not take it for done.
				r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSuspended, "stopping: operatingMode is Suspended")
			}
			return err
		}
		if err := r.Driver.Delete(ctx, id, false); err != nil {
			return err
		}
	}
	if st.Phase != v1alpha1.PhaseSuspended {
		r.event(sb, v1alpha1.EventNormal, ReasonSuspended, "Sandbox suspended; its writable layer is kept")
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
	r.flushEvents()
	return r.Store.Update(sb)
}

// teardown stops the sandbox (telling why in a Killing event, unless why is
// empty) and removes everything it owned.
func (r *SandboxReconciler) teardown(ctx context.Context, sb *v1alpha1.Sandbox, why string) error {
	id := sb.Metadata.UID
	if _, err := r.Driver.State(ctx, id); errors.Is(err, vmdriver.ErrNotFound) {
		return nil // nothing left: spare the runtime calls on every resync
	}
	if err := r.stop(ctx, sb, why); err != nil && !errors.Is(err, vmdriver.ErrNotFound) {
		return err
	}
	if err := r.Driver.Delete(ctx, id, true); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.started, id)
	r.mu.Unlock()
	return nil
}

// warnExposedVolumes tells, in a Warning event, of each read-write volume
// other host users can enter: what the sandbox writes there (a set-uid
// program of the sandboxes' host uid, say) is theirs to run.
func (r *SandboxReconciler) warnExposedVolumes(sb *v1alpha1.Sandbox, spec vmdriver.Spec) {
	for _, m := range spec.Mounts {
		if m.ReadOnly {
			continue
		}
		fi, err := os.Stat(m.HostPath)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			continue
		}
		r.event(sb, v1alpha1.EventWarning, ReasonVolumeExposed, fmt.Sprintf(
			"volume %s: other host users can enter %s (mode %#o); files the sandbox writes there, set-uid programs included, are theirs to use: put it inside a root-owned directory of mode 0710 and the sandboxes' group, or mount it readOnly",
			m.Path, m.HostPath, fi.Mode().Perm()))
	}
}

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

// stop stops the sandbox: SIGTERM, then SIGKILL after StopGrace. The grace
// period runs in the background: if the sandbox has not stopped within
// inlineWait it returns errStopping, and the stop requeues the sandbox when
// it is done. why, if not empty, is told in a Killing event when the stop
// begins.
func (r *SandboxReconciler) stop(ctx context.Context, sb *v1alpha1.Sandbox, why string) error {
	id := sb.Metadata.UID
	var onStart func()
	if why != "" {
		onStart = func() { r.event(sb, v1alpha1.EventNormal, ReasonKilling, "Stopping sandbox: "+why) }
	}
	_, err, finished := r.background(ctx, "stop/"+id, "stop", v1alpha1.KeyOf(sb),
		func(ctx context.Context) (any, error) { return nil, r.Driver.Stop(ctx, id, r.StopGrace) }, onStart)
	if !finished && err == nil {
		return errStopping
	}
	return err
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

// backoffResetAfter is how long a run must last for its restart to start
// again from the shortest backoff.
const backoffResetAfter = 10 * time.Minute

type secretError struct{ msg string }

func (e *secretError) Error() string { return e.msg }

// driverSpec merges the image config with the Sandbox spec the way
// Kubernetes does: command replaces the entrypoint, args replace cmd.
func (r *SandboxReconciler) driverSpec(sb *v1alpha1.Sandbox, img *images.Image) (vmdriver.Spec, error) {
	s := sb.Spec
	var argv []string
	switch {
	case len(s.Command) > 0:
		argv = append(append(argv, s.Command...), s.Args...)
	case len(s.Args) > 0:
		argv = append(append(argv, img.Config.Entrypoint...), s.Args...)
	default:
		argv = append(append(argv, img.Config.Entrypoint...), img.Config.Cmd...)
	}
	if len(argv) == 0 {
		return vmdriver.Spec{}, Terminal(fmt.Errorf("image %s has no entrypoint or cmd and the Sandbox sets no command: set spec.command (and spec.args)", s.Image))
	}
	env := mergeEnv(img.Config.Env, "HOSTNAME="+sb.Metadata.Name)
	for _, e := range s.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			sec := &v1alpha1.Secret{}
			if err := r.Store.Get(v1alpha1.KindSecret, sb.Metadata.Namespace, ref.Name, sec); err != nil {
				if r.NotFound(err) {
					return vmdriver.Spec{}, &secretError{fmt.Sprintf("env %s: secret %q not found in namespace %q", e.Name, ref.Name, sb.Metadata.Namespace)}
				}
				return vmdriver.Spec{}, err
			}
			_, ok1 := sec.Spec.StringData[ref.Key]
			_, ok2 := sec.Spec.Data[ref.Key]
			if !ok1 && !ok2 {
				return vmdriver.Spec{}, &secretError{fmt.Sprintf("env %s: secret %q has no key %q", e.Name, ref.Name, ref.Key)}
			}
			// The sandbox only ever sees a placeholder; the egress proxy
			// substitutes the value on the way out.
			v = Placeholder(sb.Metadata.UID, sb.Metadata.Namespace, ref.Name, ref.Key)
		}
		env = mergeEnv(env, e.Name+"="+v)
	}
	uid, gid, err := resolveUser(img.Config.User, img.Layers)
	if err != nil {
		return vmdriver.Spec{}, Terminal(err)
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = img.Config.WorkingDir
	}
	if wd == "" {
		wd = "/"
	}
	spec := vmdriver.Spec{
		ID:         sb.Metadata.UID,
		Hostname:   sb.Metadata.Name,
		Layers:     img.Layers,
		AgentPath:  r.AgentPath,
		Args:       argv,
		Env:        env,
		WorkingDir: wd,
		UID:        uid,
		GID:        gid,
	}
	spec.MemoryBytes, spec.MilliCPUs, spec.PIDs = r.limits(sb)
	for _, v := range s.Volumes {
		spec.Mounts = append(spec.Mounts, vmdriver.Mount{HostPath: v.HostPath, Path: v.MountPath, ReadOnly: v.ReadOnly})
	}
	return spec, nil
}

// Placeholder is the stand-in value a sandbox sees for a secret: unique per
// sandbox and key, and meaningless outside msb's egress proxy.
func Placeholder(uid, namespace, secret, key string) string {
	h := sha256.Sum256([]byte(uid + "\x00" + namespace + "\x00" + secret + "\x00" + key))
	return "msb-placeholder-" + hex.EncodeToString(h[:12])
}

func mergeEnv(env []string, kv string) []string {
	name, _, _ := strings.Cut(kv, "=")
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if n, _, _ := strings.Cut(e, "="); n != name {
			out = append(out, e)
		}
	}
	return append(out, kv)
}

// resolveUser turns an image config user ("", "1000", "1000:1000", "nobody",
// "app:app") into ids, reading /etc/passwd and /etc/group from the layers.
func resolveUser(user string, layers []string) (uint32, uint32, error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := lookupID(u, "etc/passwd", layers)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q: %w", user, err)
	}
	gid := uid
	if hasGroup {
		gid, err = lookupID(g, "etc/group", layers)
		if err != nil {
			return 0, 0, fmt.Errorf("image user %q: %w", user, err)
		}
	} else if _, err := strconv.ParseUint(u, 10, 32); err != nil {
		// A named user's primary group is the passwd entry's gid field.
		if v, err := lookupField(u, "etc/passwd", layers, 3); err == nil {
			gid = v
		}
	}
	return uid, gid, nil
}

func lookupID(name, file string, layers []string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	return lookupField(name, file, layers, 2)
}

func lookupField(name, file string, layers []string, field int) (uint32, error) {
	for i := len(layers) - 1; i >= 0; i-- {
		data, found, err := readImageFile(layers[i], file)
		if err != nil {
			return 0, err
		}
		if !found {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) > field && f[0] == name {
				n, err := strconv.ParseUint(f[field], 10, 32)
				if err != nil {
					return 0, fmt.Errorf("malformed /%s entry for %q", file, name)
				}
				return uint32(n), nil
			}
		}
		return 0, fmt.Errorf("%q not found in /%s", name, file)
	}
	return 0, fmt.Errorf("no /%s in the image to look up %q", file, name)
}

// maxImageFileRead bounds what msbd reads of an image's /etc/passwd or /etc/group.
const maxImageFileRead = 1 << 20

// readImageFile reads name from one unpacked layer. The layer is hostile
// input read by root on the host: the path never leaves the layer (os.Root),
// a symlink is not followed, only a regular file is read (a fifo or device
// would hang or flood msbd) and at most maxImageFileRead bytes. found is false
// when the layer lacks the file; a whiteout (the file deleted by this layer)
// ends the search as an error.
func readImageFile(layer, name string) (data []byte, found bool, err error) {
	root, err := os.OpenRoot(layer)
	if err != nil {
		return nil, false, nil
	}
	defer root.Close()
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, false, nil
	}
	switch {
	case fi.Mode()&os.ModeCharDevice != 0:
		return nil, false, fmt.Errorf("/%s is deleted in the image", name)
	case !fi.Mode().IsRegular():
		return nil, false, fmt.Errorf("/%s in the image is not a regular file; msb only reads plain files of an image", name)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("/%s in the image is not a regular file", name)
	}
	data, err = io.ReadAll(io.LimitReader(f, maxImageFileRead))
	return data, true, err
}

// specHash identifies what a sandbox runs as the user asked for it: the image
// reference as written, command, args, env, working dir, resources, volumes
// and ports, plus the defaults msbd filled in. Like a Kubernetes pod, a
// running sandbox keeps the image it started with: a tag moving in the cache
// (another pull, even one whose image config differs) restarts nothing;
// the sandbox picks the new image up when it next starts. Fields that do not
// change the running sandbox (pull and restart policy, lifecycle, mode) are
// left out.
func (r *SandboxReconciler) specHash(sb *v1alpha1.Sandbox) string {
	s := sb.Spec
	mem, milli, pids := r.limits(sb)
	b, _ := json.Marshal(struct {
		Image       string
		Command     []string
		Args        []string
		WorkingDir  string
		Env         []v1alpha1.EnvVar
		Volumes     []v1alpha1.Volume
		Ports       []v1alpha1.Port
		MemoryBytes int64
		MilliCPUs   int64
		PIDs        int64
	}{s.Image, s.Command, s.Args, s.WorkingDir, s.Env, s.Volumes, s.Ports, mem, milli, pids})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// limits are the sandbox's resource limits: its spec's, else msbd's defaults.
func (r *SandboxReconciler) limits(sb *v1alpha1.Sandbox) (memoryBytes, milliCPUs, pids int64) {
	res := sb.Spec.Resources
	memoryBytes, milliCPUs, pids = res.Memory.Value(), res.CPUs.MilliValue(), res.PIDs
	if memoryBytes == 0 {
		memoryBytes = r.DefaultMemoryBytes
	}
	if pids == 0 {
		pids = r.DefaultPIDs
	}
	return memoryBytes, milliCPUs, pids
}

func expiresAt(sb *v1alpha1.Sandbox) *time.Time {
	l := sb.Spec.Lifecycle
	var exp *time.Time
	if l.ShutdownTime != nil {
		t := l.ShutdownTime.UTC()
		exp = &t
	}
	if l.TTL != nil && sb.Metadata.CreationTimestamp != nil {
		if d, err := l.TTL.Parse(); err == nil {
			t := sb.Metadata.CreationTimestamp.Add(d).UTC()
			if exp == nil || t.Before(*exp) {
				exp = &t
			}
		}
	}
	return exp
}

// watchExit requeues the sandbox as soon as its init process exits, so exits
// are seen at once rather than at the next resync.
func (r *SandboxReconciler) watchExit(sb *v1alpha1.Sandbox, pid int) {
	if pid <= 0 {
		return
	}
	id, key := sb.Metadata.UID, v1alpha1.KeyOf(sb)
	r.mu.Lock()
	if r.watching[id] == pid {
		r.mu.Unlock()
		return
	}
	r.watching[id] = pid
	r.mu.Unlock()
	go func() {
		waitPidExit(pid, func() bool {
			st, err := r.Driver.State(context.Background(), id)
			if err != nil {
				return !errors.Is(err, vmdriver.ErrNotFound) // unsure: keep waiting
			}
			return st.PID == pid
		})
		r.mu.Lock()
		if r.watching[id] == pid {
			delete(r.watching, id)
		}
		r.mu.Unlock()
		r.Requeue(key)
	}()
}

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
		if err == nil || r.Conflict == nil || !r.Conflict(err) || attempt == 4 {
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
	ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: sb.Metadata.Namespace, Name: sb.Metadata.Name, UID: sb.Metadata.UID}
	r.events <- pendingEvent{ref: ref, typ: typ, reason: reason, message: msg}
}

// RecordPanic is the Controller's OnPanic hook: it leaves a Warning event on
// the Sandbox so a crash in the reconciler is visible to users.
func (r *SandboxReconciler) RecordPanic(key string, recovered any) {
	_, ns, name, err := v1alpha1.SplitKey(key)
	if err != nil {
		return
	}
	r.init()
	if err := r.Store.Get(v1alpha1.KindSandbox, ns, name, &v1alpha1.Sandbox{}); r.NotFound != nil && r.NotFound(err) {
		// Gone: an event would outlive it (events go with their object).
		r.Log.Error("internal error while reconciling a deleted sandbox", "key", key, "panic", fmt.Sprint(recovered))
		return
	}
	ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: ns, Name: name}
	r.events <- pendingEvent{ref: ref, typ: v1alpha1.EventWarning, reason: ReasonPanic, message: fmt.Sprintf("internal error while reconciling: %v (will retry)", recovered)}
}

func hasFinalizer(sb *v1alpha1.Sandbox) bool {
	for _, f := range sb.Metadata.Finalizers {
		if f == v1alpha1.FinalizerSandbox {
			return true
		}
	}
	return false
}
