package reconciler

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/drivertest"
)

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
// stopped (it must not keep running with less isolation than asked for) but
// keeps its writable layer there; moved back, it starts again on it. A
// finished or suspended one is not touched at all.
func TestSandboxIsolationChange(t *testing.T) {
	h := newHarness(t)
	sb := h.create("box", nil)
	h.mustReconcile("box")
	if d := h.get("box").Status.Driver; d != "fake" {
		t.Fatalf("status.driver = %q, want fake", d)
	}
	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationMicroVM })
	for range 2 {
		if _, err := h.reconcile("box"); !isTerminal(err) {
			t.Fatalf("Reconcile = %v, want a TerminalError", err)
		}
	}
	wantCalls(t, "moved to microvm", h.drv.Mutations(), "Stop", "Delete(false)")
	if got := h.boxStatus(sb.Metadata.UID); got != vmdriver.StatusStopped {
		t.Errorf("the sandbox is %q in its driver, want kept and stopped", got)
	}
	got := h.get("box")
	wantPhase(t, got, v1alpha1.PhasePending)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonMicroVMUnavailable)
	if got.Status.PID != 0 {
		t.Errorf("pid %d for a stopped sandbox", got.Status.PID)
	}

	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationContainer })
	h.mustReconcile("box")
	wantCalls(t, "moved back to container", h.drv.Mutations(), "Delete(false)", "Create", "Start")
	got = h.get("box")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if got.Status.Driver != "fake" || got.Status.Isolation != v1alpha1.IsolationContainer {
		t.Errorf("driver/isolation = %q/%q", got.Status.Driver, got.Status.Isolation)
	}

	// A suspended sandbox keeps its phase and its layer.
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.OperatingMode = v1alpha1.ModeSuspended })
	h.mustReconcile("box")
	wantPhase(t, h.get("box"), v1alpha1.PhaseSuspended)
	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationMicroVM })
	h.reconcile("box")
	wantCalls(t, "suspended, moved to microvm", h.drv.Mutations())
	wantPhase(t, h.get("box"), v1alpha1.PhaseSuspended)
}

// Moved to an isolation another driver gives, a sandbox leaves its old
// driver for good and starts in the new one; while the old run stops it is
// not Ready (a wait must not take the old run for the new one).
func TestSandboxMovesBetweenDrivers(t *testing.T) {
	h := newHarness(t)
	vm := drivertest.NewFake("vm", "microvm")
	h.r.Drivers = vmdriver.NewSet("", h.drv, vm)
	sb := h.create("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationContainer })
	h.mustReconcile("box")
	gate := make(chan struct{})
	h.drv.GateStop(gate)
	h.drv.Reset()
	h.update("box", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationMicroVM })
	h.reconcileReturns("box", "a slow stop in the old driver")
	got := h.get("box")
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonUpdating)
	if got.Status.Driver != "fake" {
		t.Errorf("status.driver = %q while the old run stops, want fake", got.Status.Driver)
	}
	before := h.requeueCount("box")
	close(gate)
	h.drv.GateStop(nil)
	h.waitRequeued("box", before, "the stop never requeued the sandbox")
	h.mustReconcile("box")
	wantCalls(t, "old driver", h.drv.Mutations(), "Stop", "Delete(true)")
	wantCalls(t, "new driver", vm.Mutations(), "Create", "Start")
	got = h.get("box")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	if got.Status.Driver != "vm" || got.Status.Isolation != v1alpha1.IsolationMicroVM {
		t.Errorf("driver/isolation = %q/%q, want vm/microvm", got.Status.Driver, got.Status.Isolation)
	}
	if _, ok := h.drv.Box(sb.Metadata.UID); ok {
		t.Error("the old driver still holds the sandbox")
	}
	// Its run is watched in the new driver.
	before = h.requeueCount("box")
	if err := vm.Exit(sb.Metadata.UID, 0); err != nil {
		t.Fatal(err)
	}
	h.waitRequeued("box", before, "the end of the run in the new driver was not noticed")
}

// A sandbox recorded in a driver this msbd lacks is not reachable; it says
// so, a finished one keeps its phase, and an explicit isolation a driver
// here gives starts it afresh there.
func TestSandboxRecordedDriverMissing(t *testing.T) {
	h := newHarness(t)
	h.create("job", nil)
	sb := h.get("job")
	sb.Status.Driver, sb.Status.Phase = "krun", v1alpha1.PhaseSucceeded
	if err := h.st.UpdateStatus(sb); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reconcile("job"); !isTerminal(err) {
		t.Fatalf("Reconcile = %v, want a TerminalError", err)
	}
	got := h.get("job")
	wantPhase(t, got, v1alpha1.PhaseSucceeded)
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonDriverUnavailable)
	wantCalls(t, "driver missing", h.drv.Mutations())

	h.update("job", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationContainer })
	h.mustReconcile("job")
	got = h.get("job")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	if got.Status.Driver != "fake" {
		t.Errorf("status.driver = %q, want fake", got.Status.Driver)
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

// A driver that cannot say whether it holds a sandbox does not block
// deleting one that another driver runs.
func TestSandboxDeletionSkipsBrokenDriver(t *testing.T) {
	h := newHarness(t)
	broken := drivertest.NewFake("broken", "microvm")
	broken.SetError("State", errors.New("cannot reach the VMM"))
	h.r.Drivers = vmdriver.NewSet("", h.drv, broken)
	sb := h.create("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Isolation = v1alpha1.IsolationContainer })
	h.mustReconcile("web")
	if err := h.st.Delete(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web")
	if err := h.st.Get(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name, &v1alpha1.Sandbox{}); !errors.Is(err, v1alpha1.ErrNotFound) {
		t.Fatalf("sandbox still stored: %v", err)
	}
	if _, ok := h.drv.Box(sb.Metadata.UID); ok {
		t.Error("the driver still holds the sandbox")
	}
}

// isolation auto takes a microVM where the set has one, and otherwise a
// container with one Warning event that says why microVMs are unavailable.
func TestSandboxAutoIsolation(t *testing.T) {
	h := newHarness(t)
	h.create("auto-ctr", nil)
	h.mustReconcile("auto-ctr")
	h.mustReconcile("auto-ctr")
	got := h.get("auto-ctr")
	if got.Status.Driver != "fake" || got.Status.Isolation != v1alpha1.IsolationContainer {
		t.Errorf("driver/isolation = %q/%q, want fake/container", got.Status.Driver, got.Status.Isolation)
	}
	var fallback []v1alpha1.Event
	for _, ev := range h.events("auto-ctr") {
		if ev.Reason == ReasonContainerFallback {
			fallback = append(fallback, ev)
		}
	}
	if len(fallback) != 1 || fallback[0].Type != v1alpha1.EventWarning || fallback[0].Count > 1 ||
		!strings.Contains(fallback[0].Message, "no usable KVM device") {
		t.Errorf("fallback events %+v: want one Warning saying why", fallback)
	}

	vm := drivertest.NewFake("vm", "microvm")
	h.r.Drivers = vmdriver.NewSet("", h.drv, vm)
	h.create("auto-vm", nil)
	h.mustReconcile("auto-vm")
	got = h.get("auto-vm")
	if got.Status.Driver != "vm" || got.Status.Isolation != v1alpha1.IsolationMicroVM {
		t.Errorf("driver/isolation = %q/%q, want vm/microvm", got.Status.Driver, got.Status.Isolation)
	}
	if n := h.eventCount("auto-vm", ReasonContainerFallback); n != 0 {
		t.Errorf("%d fallback events for a sandbox in a microVM", n)
	}
}
