// Package drivertest holds what tests of vmdriver backends and of their users
// share: Fake, a recording in-memory driver for tests of the reconciler and
// msbd, and the conformance suite (Run) every backend and the fake pass, so
// the fake never drifts from what real drivers do.
package drivertest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"msb.dev/msb/vmdriver"
)

// Fake is an in-memory vmdriver.Driver that behaves like the container
// driver where a caller can tell: every method is idempotent, State of an
// unknown id is ErrNotFound, a created-but-not-started or
// deleted-but-not-purged sandbox is stopped without an exit code, and
// Delete(purge=true) forgets the sandbox. It records the calls that ask or
// change something, in order; Wait and Endpoint are not recorded (they run in
// background goroutines and would make the order depend on scheduling).
type Fake struct {
	name, isolation string
	// Dir is where Endpoint says a sandbox's agent socket and log are
	// (DIR/<id>/agent.sock and DIR/<id>); nothing is created there.
	Dir string

	mu       sync.Mutex
	nextPID  int
	boxes    map[string]*fakeBox
	calls    []string
	created  []vmdriver.Spec
	errs     map[string]error
	onStart  func(id string)
	stopGate chan struct{}
}

// Box is what the fake holds for one sandbox.
type Box struct {
	Spec      vmdriver.Spec
	Status    vmdriver.Status
	PID       int
	ExitCode  int
	Exited    bool
	OOMKilled bool
	StartedAt time.Time
}

type fakeBox struct {
	Box
	// ended is closed when the current run ends; nil while not alive.
	ended chan struct{}
}

var _ vmdriver.Driver = (*Fake)(nil)

// NewFake returns an empty fake driver called name that reports isolation.
func NewFake(name, isolation string) *Fake {
	return &Fake{name: name, isolation: isolation, Dir: "/nonexistent/msb-fake", nextPID: 1000,
		boxes: map[string]*fakeBox{}, errs: map[string]error{}}
}

func (d *Fake) Name() string      { return d.name }
func (d *Fake) Isolation() string { return d.isolation }

// SetError makes method ("Create", "Start", "Stop", "State", "Delete",
// "List") return err from now on; nil makes it succeed again.
func (d *Fake) SetError(method string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.errs, method)
	} else {
		d.errs[method] = err
	}
}

// OnStart sets a hook called after each successful Start that started a
// run, without the fake's lock held.
func (d *Fake) OnStart(fn func(id string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onStart = fn
}

// GateStop makes every Stop wait until gate is closed (a sandbox taking its
// grace period); nil removes the gate.
func (d *Fake) GateStop(gate chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopGate = gate
}

func (d *Fake) record(method, call string) error {
	d.calls = append(d.calls, call)
	return d.errs[method]
}

// end finishes b's current run, waking its waiters.
func (b *fakeBox) end(exited bool, code int) {
	b.Status, b.PID, b.Exited, b.ExitCode, b.OOMKilled = vmdriver.StatusStopped, 0, exited, code, false
	if b.ended != nil {
		close(b.ended)
		b.ended = nil
	}
}

func (d *Fake) Create(_ context.Context, spec vmdriver.Spec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("Create", "Create"); err != nil {
		return err
	}
	b := d.boxes[spec.ID]
	if b != nil && b.Status.Alive() {
		return nil // already running: left alone
	}
	if b == nil {
		b = &fakeBox{}
		d.boxes[spec.ID] = b
	}
	b.Box = Box{Spec: spec, Status: vmdriver.StatusStopped}
	d.created = append(d.created, spec)
	return nil
}

func (d *Fake) Start(_ context.Context, id string) error {
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
	if b.Status.Alive() {
		d.mu.Unlock()
		return nil
	}
	d.nextPID++
	b.Status, b.PID, b.Exited, b.ExitCode, b.StartedAt = vmdriver.StatusRunning, d.nextPID, false, 0, time.Now()
	b.ended = make(chan struct{})
	hook := d.onStart
	d.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	return nil
}

func (d *Fake) Stop(ctx context.Context, id string, _ time.Duration) error {
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
	if b := d.boxes[id]; b != nil && b.Status.Alive() {
		b.end(false, 0) // killed: no exit code written
	}
	return nil
}

func (d *Fake) State(_ context.Context, id string) (vmdriver.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("State", "State"); err != nil {
		return vmdriver.State{}, err
	}
	b := d.boxes[id]
	if b == nil {
		return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
	}
	return b.state(), nil
}

func (b *fakeBox) state() vmdriver.State {
	return vmdriver.State{Status: b.Status, PID: b.PID, ExitCode: b.ExitCode, Exited: b.Exited, OOMKilled: b.OOMKilled, StartedAt: b.StartedAt}
}

// Wait implements vmdriver.Driver: it returns when the run ends through
// Exit, Stop or Delete.
func (d *Fake) Wait(ctx context.Context, id string) (vmdriver.State, error) {
	d.mu.Lock()
	b := d.boxes[id]
	if b == nil {
		d.mu.Unlock()
		return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
	}
	ended := b.ended
	d.mu.Unlock()
	if ended != nil {
		select {
		case <-ended:
		case <-ctx.Done():
			return vmdriver.State{}, ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b := d.boxes[id]; b != nil {
		return b.state(), nil
	}
	return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
}

func (d *Fake) Delete(_ context.Context, id string, purge bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("Delete", fmt.Sprintf("Delete(%t)", purge)); err != nil {
		return err
	}
	b := d.boxes[id]
	switch {
	case b == nil:
	case purge:
		b.end(false, 0)
		delete(d.boxes, id)
	default: // the writable layer stays: stopped, no exit code
		b.end(false, 0)
	}
	return nil
}

func (d *Fake) List(context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.record("List", "List"); err != nil {
		return nil, err
	}
	var ids []string
	for id := range d.boxes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// Endpoint implements vmdriver.Driver with paths under d.Dir.
func (d *Fake) Endpoint(id string) (vmdriver.Endpoint, error) {
	if id == "" {
		return vmdriver.Endpoint{}, fmt.Errorf("empty sandbox id")
	}
	dir := filepath.Join(d.Dir, id)
	return vmdriver.Endpoint{AgentSocket: filepath.Join(dir, "agent.sock"), LogDir: dir}, nil
}

// Exit makes the running sandbox's main command end with code.
func (d *Fake) Exit(id string, code int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.boxes[id]
	if b == nil || !b.Status.Alive() {
		return fmt.Errorf("exit %s: sandbox is not running", id)
	}
	b.end(true, code)
	return nil
}

// OOMKill ends the running sandbox's main command as the memory limit's OOM
// killer would: SIGKILL (exit code 137), reported as OOMKilled.
func (d *Fake) OOMKill(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.boxes[id]
	if b == nil || !b.Status.Alive() {
		return fmt.Errorf("oom kill %s: sandbox is not running", id)
	}
	b.end(true, 137)
	b.OOMKilled = true
	return nil
}

// Box returns what the fake holds for id.
func (d *Fake) Box(id string) (Box, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.boxes[id]
	if !ok {
		return Box{}, false
	}
	return b.Box, true
}

// Calls returns every recorded call since the last Reset: "Create",
// "Start", "Stop", "State", "Delete(true)", "Delete(false)", "List".
func (d *Fake) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// Mutations are the recorded calls that change something (all but State
// and List), since the last Reset.
func (d *Fake) Mutations() []string {
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

// Created returns the spec of every Create that prepared a sandbox, since
// the last Reset.
func (d *Fake) Created() []vmdriver.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.created)
}

// Reset forgets the recorded calls and specs (not the sandboxes).
func (d *Fake) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls, d.created = nil, nil
}
