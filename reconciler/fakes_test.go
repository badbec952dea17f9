package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/store"
	"msb.dev/msb/store/storetest"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/drivertest"
)

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
	drv   *drivertest.Fake
	imgs  *fakeImages
	r     *SandboxReconciler
	ev    *Recorder
	layer string // the test image's only layer directory

	mu       sync.Mutex
	requeued []string
	// requeuedCh is closed (and replaced) at every requeue: waiters wake
	// on it instead of polling.
	requeuedCh chan struct{}
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	st := storetest.Open(t)
	h := &harness{t: t, dir: dir, st: st, drv: drivertest.NewFake("fake", "container"), imgs: newFakeImages()}
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
	h.ev = NewRecorder(st, slog.New(slog.DiscardHandler))
	h.r = h.newReconciler()
	t.Cleanup(func() {
		h.r.Close()
		h.ev.Close()
	})
	return h
}

func (h *harness) newReconciler() *SandboxReconciler {
	return &SandboxReconciler{
		Store:             h.st,
		Images:            h.imgs,
		Drivers:           vmdriver.NewSet("no usable KVM device (/dev/kvm: no such file or directory); libkrun not found", h.drv),
		AgentPath:         testAgent,
		RestartBackoff:    50 * time.Millisecond,
		RestartBackoffMax: 200 * time.Millisecond,
		StopGrace:         time.Second,
		Requeue:           h.requeue,
		Events:            h.ev,
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
	if h.requeuedCh != nil {
		close(h.requeuedCh)
	}
	h.requeuedCh = make(chan struct{})
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
// The 10s bound only keeps a broken reconciler from hanging the suite.
func (h *harness) waitRequeued(name string, before int, what string) {
	h.t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		h.mu.Lock()
		if h.requeuedCh == nil {
			h.requeuedCh = make(chan struct{})
		}
		next := h.requeuedCh
		h.mu.Unlock()
		if h.requeueCount(name) > before {
			return
		}
		select {
		case <-next:
		case <-timeout.C:
			h.t.Fatal(what)
		}
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
	h.r.Events.Flush()
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

// exit makes the running sandbox's main command end with code.
func (h *harness) exit(id string, code int) {
	h.t.Helper()
	if err := h.drv.Exit(id, code); err != nil {
		h.t.Fatal(err)
	}
}

// boxStatus is what the driver holds for id ("" when nothing).
func (h *harness) boxStatus(id string) vmdriver.Status {
	b, _ := h.drv.Box(id)
	return b.Status
}
