package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/store"
	"msb.dev/msb/vmdriver"
)

// fakeDriver is an in-memory vmdriver.Driver that behaves like the container
// driver where the reconciler can tell: every method is idempotent, State of
// an unknown id is ErrNotFound, a created-but-not-started or
// deleted-but-not-purged sandbox is "stopped" without an exit code, and
// Delete(purge=true) forgets the sandbox. It records every call in order.
type fakeDriver struct {
	mu        sync.Mutex
	isolation string
	pid       int // pid a Start gives the sandbox's init
	boxes     map[string]*fakeBox
	calls     []string         // "Create", "Start", "Stop", "State", "Delete(false)", ...
	created   []vmdriver.Spec  // the spec of every Create that prepared a sandbox
	errs      map[string]error // method name → error it returns
	onStart   func(id string)  // called after a successful Start, without the lock
	stopGate  chan struct{}    // when set, Stop waits for it to be closed
}

type fakeBox struct {
	spec      vmdriver.Spec
	status    string // "running" or "stopped"
	pid       int
	exitCode  int
	exited    bool
	startedAt time.Time
}

var _ vmdriver.Driver = (*fakeDriver)(nil)

func newFakeDriver() *fakeDriver {
	// A running sandbox's pid is this test process: the reconciler's exit
	// watcher then blocks instead of requeueing at once, so Requeue calls
	// are only the ones the reconciler makes on purpose.
	return &fakeDriver{isolation: "container", pid: os.Getpid(), boxes: map[string]*fakeBox{}, errs: map[string]error{}}
}

func (d *fakeDriver) Name() string      { return "fake" }
func (d *fakeDriver) Isolation() string { return d.isolation }

func (d *fakeDriver) record(method, call string) error {
	d.calls = append(d.calls, call)
	return d.errs[method]
}

func (d *fakeDriver) Create(_ context.Context, spec vmdriver.Spec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("Create", "Create"); err != nil {
		return err
	}
	b := d.boxes[spec.ID]
	if b != nil && b.status == "running" {
		return nil // already running: left alone
	}
	if b == nil {
		b = &fakeBox{}
		d.boxes[spec.ID] = b
	}
	*b = fakeBox{spec: spec, status: "stopped"}
	d.created = append(d.created, spec)
	return nil
}

func (d *fakeDriver) Start(_ context.Context, id string) error {
	d.mu.Lock()
	if err := d.record("Start", "Start"); err != nil {
		d.mu.Unlock()
		return err
	}
	b := d.boxes[id]
	if b == nil {
		d.mu.Unlock()
		return fmt.Errorf("sandbox %s: %w (Create it first)", id, vmdriver.ErrNotFound)
	}
	if b.status == "running" {
		d.mu.Unlock()
		return nil
	}
	b.status, b.pid, b.exited, b.exitCode, b.startedAt = "running", d.pid, false, 0, time.Now()
	hook := d.onStart
	d.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	return nil
}

func (d *fakeDriver) Stop(ctx context.Context, id string, _ time.Duration) error {
	d.mu.Lock()
	gate := d.stopGate
	d.mu.Unlock()
	if gate != nil { // a sandbox taking its grace period
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("Stop", "Stop"); err != nil {
		return err
	}
	if b := d.boxes[id]; b != nil && b.status == "running" {
		b.status, b.pid, b.exited = "stopped", 0, false // killed: no exit code written
	}
	return nil
}

func (d *fakeDriver) State(_ context.Context, id string) (vmdriver.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("State", "State"); err != nil {
		return vmdriver.State{}, err
	}
	b := d.boxes[id]
	if b == nil {
		return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
	}
	return vmdriver.State{Status: b.status, PID: b.pid, ExitCode: b.exitCode, Exited: b.exited, StartedAt: b.startedAt}, nil
}

func (d *fakeDriver) Delete(_ context.Context, id string, purge bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("Delete", fmt.Sprintf("Delete(%t)", purge)); err != nil {
		return err
	}
	b := d.boxes[id]
	switch {
	case b == nil:
	case purge:
		delete(d.boxes, id)
	default: // the writable layer stays: "stopped", no exit code
		b.status, b.pid, b.exited, b.exitCode = "stopped", 0, false, 0
	}
	return nil
}

func (d *fakeDriver) List(context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "List")
	var ids []string
	for id := range d.boxes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

func (d *fakeDriver) AgentDir(id string) string {
	return filepath.Join("/nonexistent/msb", id, "agent")
}

// exit makes the running sandbox's main command end with code.
func (d *fakeDriver) exit(t *testing.T, id string, code int) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.boxes[id]
	if b == nil || b.status != "running" {
		t.Fatalf("exit %s: sandbox is not running (%+v)", id, b)
	}
	b.status, b.pid, b.exited, b.exitCode = "stopped", 0, true, code
}

// setPID changes the pid a running sandbox reports.
func (d *fakeDriver) setPID(id string, pid int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.boxes[id].pid = pid
}

func (d *fakeDriver) box(id string) (fakeBox, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.boxes[id]
	if !ok {
		return fakeBox{}, false
	}
	return *b, true
}

// mutations are the calls that change something (all but State and List),
// since the last reset.
func (d *fakeDriver) mutations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, c := range d.calls {
		if c != "State" && c != "List" {
			out = append(out, c)
		}
	}
	return out
}

func (d *fakeDriver) allCalls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

func (d *fakeDriver) createdSpecs() []vmdriver.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.created)
}

func (d *fakeDriver) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls, d.created = nil, nil
}

// fakeImages resolves references from a map. An error set for a reference
// is returned as is (a plain error is a failed pull; an
// *images.InvalidImageError a refused image).
type fakeImages struct {
	mu    sync.Mutex
	imgs  map[string]*images.Image
	errs  map[string]error
	pulls []string      // "ref policy"
	gate  chan struct{} // when set, Pull waits for it to be closed
}

func newFakeImages() *fakeImages {
	return &fakeImages{imgs: map[string]*images.Image{}, errs: map[string]error{}}
}

func (f *fakeImages) Pull(ctx context.Context, ref string, policy images.PullPolicy, _ func(images.Progress)) (*images.Image, error) {
	f.mu.Lock()
	f.pulls = append(f.pulls, ref+" "+string(policy))
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[ref]; err != nil {
		return nil, err
	}
	img, ok := f.imgs[ref]
	if !ok {
		return nil, fmt.Errorf("image %q: MANIFEST_UNKNOWN: manifest unknown", ref)
	}
	c := *img
	c.Layers = slices.Clone(img.Layers)
	c.Config.Entrypoint = slices.Clone(img.Config.Entrypoint)
	c.Config.Cmd = slices.Clone(img.Config.Cmd)
	c.Config.Env = slices.Clone(img.Config.Env)
	return &c, nil
}

func (f *fakeImages) set(img *images.Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imgs[img.Ref] = img
}

func (f *fakeImages) fail(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.errs, ref)
	} else {
		f.errs[ref] = err
	}
}

func (f *fakeImages) pullLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pulls)
}

const (
	testImage  = "registry.test/app:1.0"
	testDigest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testAgent  = "/x/msb-agent"
)

// harness is a SandboxReconciler wired to a real store in a temporary
// directory, a fakeDriver and fakeImages.
type harness struct {
	t     *testing.T
	dir   string
	st    *store.Store
	drv   *fakeDriver
	imgs  *fakeImages
	r     *SandboxReconciler
	layer string // the test image's only layer directory

	mu       sync.Mutex
	requeued []string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "msb.db"), store.WithSecretKeyFile(filepath.Join(dir, "keys", "secrets.key")))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, st: st, drv: newFakeDriver(), imgs: newFakeImages()}
	h.layer = h.mkLayer("base", nil)
	h.imgs.set(&images.Image{
		Ref:    testImage,
		Digest: testDigest,
		Config: images.Config{
			Entrypoint: []string{"/bin/app"},
			Cmd:        []string{"serve"},
			Env:        []string{"PATH=/usr/bin:/bin"},
			WorkingDir: "/srv",
		},
		Layers: []string{h.layer},
	})
	h.r = h.newReconciler()
	t.Cleanup(func() {
		h.r.Close()
		st.Close()
	})
	return h
}

func (h *harness) newReconciler() *SandboxReconciler {
	return &SandboxReconciler{
		Store:             h.st,
		NotFound:          func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Conflict:          func(err error) bool { return errors.Is(err, store.ErrConflict) },
		Images:            h.imgs,
		Driver:            h.drv,
		AgentPath:         testAgent,
		RestartBackoff:    50 * time.Millisecond,
		RestartBackoffMax: 200 * time.Millisecond,
		StopGrace:         time.Second,
		Requeue:           h.requeue,
		Log:               slog.New(slog.DiscardHandler),
	}
}

// restartMsbd replaces the reconciler with a fresh one, as after an msbd
// restart: the store and the driver's sandboxes stay.
func (h *harness) restartMsbd() {
	h.r.Close()
	h.r = h.newReconciler()
}

func (h *harness) requeue(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requeued = append(h.requeued, key)
}

// reconcileReturns reconciles name and fails unless Reconcile returns nil
// within 10s: background work (a slow pull or stop) must not hold it; what
// names that work.
func (h *harness) reconcileReturns(name, what string) {
	h.t.Helper()
	done := make(chan error, 1)
	go func() { _, err := h.reconcile(name); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			h.t.Fatalf("Reconcile during %s: %v, want nil (the work requeues)", what, err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("Reconcile waited for %s instead of returning", what)
	}
}

// requeueCount is how often name was requeued so far.
func (h *harness) requeueCount(name string) int {
	n := 0
	for _, k := range h.requeues() {
		if k == key(name) {
			n++
		}
	}
	return n
}

// waitRequeued waits until name was requeued more than before times; what
// says what that requeue stands for when it never comes.
func (h *harness) waitRequeued(name string, before int, what string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.requeueCount(name) <= before {
		if time.Now().After(deadline) {
			h.t.Fatal(what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) requeues() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.requeued)
}

// mkLayer makes a layer directory holding files (path → content).
func (h *harness) mkLayer(name string, files map[string]string) string {
	h.t.Helper()
	dir := filepath.Join(h.dir, "layers", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	return dir
}

func key(name string) string {
	return v1alpha1.Key(v1alpha1.KindSandbox, v1alpha1.DefaultNamespace, name)
}

// create stores a defaulted Sandbox running testImage, changed by mut.
func (h *harness) create(name string, mut func(*v1alpha1.Sandbox)) *v1alpha1.Sandbox {
	h.t.Helper()
	sb := &v1alpha1.Sandbox{
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: v1alpha1.DefaultNamespace},
		Spec:     v1alpha1.SandboxSpec{Image: testImage},
	}
	v1alpha1.SetDefaults(sb)
	if mut != nil {
		mut(sb)
	}
	if err := h.st.Create(sb); err != nil {
		h.t.Fatal(err)
	}
	return sb
}

func (h *harness) get(name string) *v1alpha1.Sandbox {
	h.t.Helper()
	sb := &v1alpha1.Sandbox{}
	if err := h.st.Get(v1alpha1.KindSandbox, v1alpha1.DefaultNamespace, name, sb); err != nil {
		h.t.Fatal(err)
	}
	return sb
}

// update changes the Sandbox's spec in the store, as a user's apply would.
func (h *harness) update(name string, mut func(*v1alpha1.Sandbox)) *v1alpha1.Sandbox {
	h.t.Helper()
	sb := h.get(name)
	mut(sb)
	if err := h.st.Update(sb); err != nil {
		h.t.Fatal(err)
	}
	return sb
}

func (h *harness) reconcile(name string) (Result, error) {
	return h.r.Reconcile(h.t.Context(), key(name))
}

func (h *harness) mustReconcile(name string) Result {
	h.t.Helper()
	res, err := h.reconcile(name)
	if err != nil {
		h.t.Fatalf("Reconcile(%s): %v", key(name), err)
	}
	return res
}

// events returns the events about the Sandbox, oldest first, once every
// event recorded so far is written.
func (h *harness) events(name string) []v1alpha1.Event {
	h.t.Helper()
	h.r.init()
	h.r.flushEvents()
	evs, err := h.st.Events(v1alpha1.DefaultNamespace, &v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: v1alpha1.DefaultNamespace, Name: name})
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func (h *harness) reasons(name string) []string {
	h.t.Helper()
	var out []string
	for _, ev := range h.events(name) {
		out = append(out, ev.Reason)
	}
	return out
}

// eventCount is how often an event with reason was recorded (repeats of one
// message are counted on a single Event).
func (h *harness) eventCount(name, reason string) int {
	h.t.Helper()
	n := 0
	for _, ev := range h.events(name) {
		if ev.Reason == reason {
			n += int(ev.Count)
		}
	}
	return n
}

func (h *harness) eventMessages(name, reason string) []string {
	h.t.Helper()
	var out []string
	for _, ev := range h.events(name) {
		if ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

// wantCond checks condition typ of sb and returns it.
func wantCond(t *testing.T, sb *v1alpha1.Sandbox, typ string, status v1alpha1.ConditionStatus, reason string) *v1alpha1.Condition {
	t.Helper()
	c := v1alpha1.FindCondition(sb.Status.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition; conditions: %+v", typ, sb.Status.Conditions)
	}
	if c.Status != status || c.Reason != reason {
		t.Fatalf("%s = %s/%s (%q), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return c
}

func wantPhase(t *testing.T, sb *v1alpha1.Sandbox, phase v1alpha1.SandboxPhase) {
	t.Helper()
	if sb.Status.Phase != phase {
		t.Fatalf("phase = %q, want %q (status %+v)", sb.Status.Phase, phase, sb.Status)
	}
}

func wantCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: driver calls = %q, want %q", what, got, want)
	}
}

func wantExitCode(t *testing.T, sb *v1alpha1.Sandbox, code int32) {
	t.Helper()
	if sb.Status.ExitCode == nil || *sb.Status.ExitCode != code {
		t.Fatalf("exitCode = %v, want %d", ptrString(sb.Status.ExitCode), code)
	}
}

func ptrString(p *int32) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func isTerminal(err error) bool {
	var te *TerminalError
	return errors.As(err, &te)
}
