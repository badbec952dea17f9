package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
)

// Store is what the controllers need from the store.
type Store interface {
	Get(kind, namespace, name string, into v1alpha1.Object) error
	List(kind, namespace string) ([]v1alpha1.Object, int64, error)
	Update(obj v1alpha1.Object) error
	UpdateStatus(obj v1alpha1.Object) error
	RecordEvent(ref v1alpha1.ObjectReference, eventType, reason, message string) error
}

// Images resolves an image reference to unpacked layers.
type Images interface {
	Pull(ctx context.Context, ref string, policy images.PullPolicy, progress func(images.Progress)) (*images.Image, error)
}

// Event and condition reasons, stable for tools to match on.
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
	// ReasonContainerFallback: isolation auto got a container because this
	// host cannot run microVMs (the event says why).
	ReasonContainerFallback  = "ContainerFallback"
	ReasonMicroVMUnavailable = "MicroVMUnavailable"
	ReasonDriverUnavailable  = "DriverUnavailable"
	ReasonPortsNotPublished  = "PortsNotPublished"
	ReasonPanic              = "ReconcilePanic"
	ReasonSpecChanged        = "SpecChanged"
	ReasonRestartRequested   = "RestartRequested"
	ReasonOOMKilled          = "OOMKilled"
)

// ConditionPortsPublished says whether spec.ports reach the sandbox.
const ConditionPortsPublished = "PortsPublished"

// SandboxReconciler converges Sandbox objects.
type SandboxReconciler struct {
	Store  Store
	Images Images
	// Drivers are the backends; each Sandbox runs in the one its
	// spec.isolation chooses, recorded in status.driver.
	Drivers *vmdriver.Set
	// Events records events; one is made (and closed by Close) when nil.
	Events *Recorder
	// Network gives sandboxes their network and enforces NetworkPolicies;
	// without it a sandbox has loopback only.
	Network Network
	// Secrets, with Network, substitutes Secret values for placeholders
	// on the way out; without it a placeholder stays one.
	Secrets *SecretInjection
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
	// DefaultDiskBytes bounds the disk of sandboxes whose spec sets no
	// spec.resources.disk (0: unlimited).
	DefaultDiskBytes int64
	// StopGrace is how long a sandbox gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// Requeue is called to look at a key again (when a sandbox's run ends).
	Requeue func(key string)
	// ProbeAgent, if set, is asked whether a running sandbox's agent (at
	// the host socket) answers: an error means it accepted the connection
	// but did not answer in time, and the sandbox turns Ready=False
	// AgentUnresponsive until it answers again. It is called off the
	// reconcile path, every AgentProbeInterval per sandbox (spread) and at
	// once when an exec timed out (SuspectAgent).
	ProbeAgent func(ctx context.Context, socket string) error
	// AgentProbeInterval is how often each running sandbox's agent is
	// probed (0: agentProbeInterval).
	AgentProbeInterval time.Duration
	// BeforeCreate, if set, runs before a sandbox is started in the
	// runtime (while it is prepared: its network and writable layer are
	// made meanwhile); an error fails the start. msbd records there how far the
	// store had got, and the sandbox's marker, so that a store later
	// restored from an older backup is not mistaken for one whose
	// sandboxes were deleted (OrphanCollector.BeforeCreate).
	BeforeCreate func(sb *v1alpha1.Sandbox) error
	Log          *slog.Logger

	mu        sync.Mutex
	watching  map[string]bool // "driver/uid" → a Wait for its run is pending
	started   map[string]bool
	ops       map[string]*bgOp       // background work by slot (see background)
	pulled    map[string]pulledImage // sandbox uid → image resolved for its next start
	agents    *agentProber           // nil without ProbeAgent
	ownEvents bool

	once    sync.Once
	ctx     context.Context // ends at Close: exit watchers stop
	cancel  context.CancelFunc
	closing sync.WaitGroup
}

func (r *SandboxReconciler) init() {
	r.once.Do(func() {
		r.watching = map[string]bool{}
		r.started = map[string]bool{}
		r.ops = map[string]*bgOp{}
		r.pulled = map[string]pulledImage{}
		r.ctx, r.cancel = context.WithCancel(context.Background())
		if r.ProbeAgent != nil {
			interval := r.AgentProbeInterval
			if interval <= 0 {
				interval = agentProbeInterval
			}
			r.agents = newAgentProber(r.ProbeAgent, r.Requeue, interval, agentRecheck)
			r.closing.Add(1)
			go func() { defer r.closing.Done(); r.agents.run(r.ctx) }()
		}
		if r.Events == nil {
			r.Events, r.ownEvents = NewRecorder(r.Store, r.Log), true
		}
	})
}

// Close cancels the pulls in flight and the exit watchers, and writes the
// events still pending when it made its own recorder. Call it after the
// controller stopped.
func (r *SandboxReconciler) Close() {
	r.init()
	r.mu.Lock()
	for slot, op := range r.ops {
		op.cancel()
		delete(r.ops, slot)
	}
	r.mu.Unlock()
	r.cancel()
	r.closing.Wait()
	if r.ownEvents {
		r.Events.Close()
	}
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
		if errors.Is(err, v1alpha1.ErrNotFound) {
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

	d, err := r.driverFor(ctx, sb, st)
	if err != nil {
		return res, err
	}
	st.Driver = d.Name()
	r.portsNotPublished(sb, st)

	if sb.Spec.OperatingMode == v1alpha1.ModeSuspended {
		if c := v1alpha1.FindCondition(st.Conditions, v1alpha1.ConditionImageReady); c == nil || c.Status != v1alpha1.ConditionTrue {
			if _, err := r.image(ctx, sb, st, images.PullIfNotPresent); errors.Is(err, errPulling) {
				return res, nil
			} else if err != nil {
				return res, err
			}
		}
		return res, r.suspend(ctx, d, sb, st)
	}

	state, err := d.State(ctx, id)
	notFound := errors.Is(err, vmdriver.ErrNotFound)
	if err != nil && !notFound {
		return res, fmt.Errorf("reading sandbox state: %w", err)
	}
	// The common case on every resync: a sandbox running the spec it was
	// started with. Nothing to resolve (image, secrets): just observe it.
	hash := r.specHash(sb)
	running := state.Status.Alive()
	restartAsked := restartRequested(sb, st)
	if running && (st.SpecHash == hash || st.SpecHash == "") && !restartAsked {
		r.observeRunning(d, sb, st, state, hash)
		r.agentUnresponsive(d, sb, st, state)
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
	finishedForGood := !notFound && state.Status == vmdriver.StatusStopped && st.SpecHash == hash && !wantsRestart(sb, exitCode(state))
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
		var se *secretinject.RefError
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
	// A restart asked for with AnnotationRestartedAt (msbctl restart) is a
	// fresh run of the same spec, counted in restartCount.
	if !notFound && (st.SpecHash != hash || restartAsked) {
		why, rec := "its spec changed", v1alpha1.RestartRecord{Reason: ReasonSpecChanged}
		if st.SpecHash == hash {
			why, rec.Reason = "a restart was requested", ReasonRestartRequested
		}
		if running {
			if err := r.stop(ctx, d, sb, why); err != nil {
				return res, err
			}
		}
		if err := d.Delete(ctx, id, false); err != nil {
			return res, err
		}
		notFound = true
		if rec.Reason == ReasonSpecChanged {
			st.RestartCount = 0
		} else {
			st.RestartCount++
		}
		rec.Time = time.Now().UTC()
		st.LastRestart = &rec
		r.event(sb, v1alpha1.EventNormal, rec.Reason, "Restarting sandbox: "+why)
	}

	if notFound || state.Status == "" || state.Status == vmdriver.StatusCreated {
		st.RestartedAt = sb.Metadata.Annotations[v1alpha1.AnnotationRestartedAt]
		return res, r.start(ctx, d, sb, st, spec, hash, img.Digest, false)
	}
	// stopped: the main command ended
	return r.finished(ctx, d, sb, st, spec, hash, img.Digest, state, res)
}

// restartRequested reports whether sb's AnnotationRestartedAt asks for a
// run the current one does not answer.
func restartRequested(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) bool {
	want := sb.Metadata.Annotations[v1alpha1.AnnotationRestartedAt]
	return want != "" && want != st.RestartedAt && st.SpecHash != ""
}

// observeLog records how much output the log cap dropped.
func (r *SandboxReconciler) observeLog(d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) {
	if ep, err := d.Endpoint(sb.Metadata.UID); err == nil && ep.LogDir != "" {
		st.LogDroppedBytes = agent.ReadLogDropped(ep.LogDir)
	}
}

// observeRunning records a sandbox that runs its current spec, adopting it
// when this msbd did not start it (after a restart).
func (r *SandboxReconciler) observeRunning(d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, state vmdriver.State, hash string) {
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
	st.Isolation = v1alpha1.Isolation(d.Isolation())
	if st.StartedAt == nil && !state.StartedAt.IsZero() {
		t := state.StartedAt
		st.StartedAt = &t
	}
	r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running", "")
	r.watchExit(d, sb)
	r.observeLog(d, sb, st)
	r.observeDisk(d, sb, st)
	if err := r.observeNetwork(sb, st, specPorts(sb)); err != nil {
		r.Log.Warn("sandbox network", "sandbox", sb.Metadata.Name, "err", err)
	}
	if err := r.injectSecrets(sb); err != nil {
		r.Log.Warn("sandbox secrets", "sandbox", sb.Metadata.Name, "err", err)
	}
}

// start creates and starts the sandbox and waits for its agent.
func (r *SandboxReconciler) start(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec vmdriver.Spec, hash, digest string, restart bool) error {
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
	// The marker (two disk syncs) is written while the network and the
	// driver prepare the sandbox; nothing runs before it is down.
	beforeCreate := make(chan error, 1)
	if r.BeforeCreate != nil {
		go func() { beforeCreate <- r.BeforeCreate(sb) }()
	} else {
		beforeCreate <- nil
	}
	marked := false
	defer func() {
		if !marked {
			<-beforeCreate // a failed start leaves nothing writing behind it
		}
	}()
	netFailed := func(err error) error {
		msg := err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonFailed, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonFailed, msg)
		return err
	}
	netReady, err := r.attachNetwork(sb, st, &spec)
	if err != nil {
		return netFailed(err)
	}
	netJoined := false
	defer func() {
		if !netJoined {
			netReady() // a failed start leaves nothing making links behind it
		}
	}()
	if err := r.injectSecrets(sb); err != nil {
		return err
	}
	if err := d.Create(ctx, spec); err != nil {
		reason, err := startFailure(err)
		msg := "creating sandbox: " + err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, reason, msg)
		r.event(sb, v1alpha1.EventWarning, reason, msg)
		return errors.New(msg)
	}
	if !restart {
		r.event(sb, v1alpha1.EventNormal, ReasonCreated, fmt.Sprintf("Created sandbox with %s isolation", d.Isolation()))
		r.warnFallback(d, sb)
		r.warnExposedVolumes(d, sb, spec)
		r.warnIsolation(d, sb, id)
	}
	netJoined = true
	if err := netReady(); err != nil {
		return netFailed(err)
	}
	marked = true
	if err := <-beforeCreate; err != nil {
		msg := "not starting: recording the store's progress for orphan collection failed: " + err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonFailed, msg)
		r.event(sb, v1alpha1.EventWarning, ReasonFailed, msg)
		return errors.New(msg)
	}
	r.mu.Lock()
	r.started[id] = true
	r.mu.Unlock()
	t1 := time.Now()
	if err := d.Start(ctx, id); err != nil {
		reason, err := startFailure(err)
		msg := "starting sandbox: " + err.Error()
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, reason, msg)
		r.event(sb, v1alpha1.EventWarning, reason, msg)
		return errors.New(msg)
	}
	now := time.Now().UTC()
	r.observeDisk(d, sb, st) // in the status write of the start, not one more
	st.StartedAt = &now
	st.ImageDigest = digest
	st.FinishedAt = nil
	st.ExitCode = nil
	st.TerminationReason = ""
	st.SpecHash = hash
	st.Isolation = v1alpha1.Isolation(d.Isolation())
	st.Phase = v1alpha1.PhaseRunning
	r.Log.Debug("started sandbox", "sandbox", sb.Metadata.Name, "create", t1.Sub(t0), "start", time.Since(t1))
	// Ready means started, as for a Kubernetes container without a readiness
	// probe; exec waits the few milliseconds until the agent listens.
	state, err := d.State(ctx, id)
	if err == nil && state.Status == vmdriver.StatusRunning {
		st.PID = state.PID
		r.watchExit(d, sb)
		r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running", "")
		if ip, err := netip.ParseAddr(st.IP); err == nil {
			r.publish(sb, st, spec.Ports, ip)
		}
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
func (r *SandboxReconciler) finished(ctx context.Context, d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec vmdriver.Spec, hash, digest string, state vmdriver.State, res Result) (Result, error) {
	r.forgetAgent(sb.Metadata.UID)
	r.observeLog(d, sb, st)
	r.observeDisk(d, sb, st)
	code := exitCode(state)
	c32 := int32(code)
	first := st.FinishedAt == nil || st.ExitCode == nil
	st.ExitCode = &c32
	st.PID = 0
	if first {
		now := time.Now().UTC()
		st.FinishedAt = &now
		r.unpublish(sb, st)
	}
	st.TerminationReason = terminationReason(state, code)
	if first && state.OOMKilled {
		r.event(sb, v1alpha1.EventWarning, ReasonOOMKilled, oomMessage(sb, code))
	}
	if !wantsRestart(sb, code) {
		if code == 0 {
			st.Phase = v1alpha1.PhaseSucceeded
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonCompleted, "the sandbox command exited with code 0")
			if first {
				r.event(sb, v1alpha1.EventNormal, ReasonCompleted, "Sandbox command exited with code 0")
			}
		} else if state.OOMKilled {
			st.Phase = v1alpha1.PhaseFailed
			r.condition(st, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonOOMKilled, oomMessage(sb, code))
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
		if state.OOMKilled {
			msg = fmt.Sprintf("Back-off %s restarting sandbox (OOMKilled: exit code %d, killed by the memory limit)", delay.Round(time.Millisecond), code)
		}
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
	if err := d.Delete(ctx, sb.Metadata.UID, false); err != nil {
		return res, err
	}
	st.RestartCount++
	return res, r.start(ctx, d, sb, st, spec, hash, digest, true)
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
