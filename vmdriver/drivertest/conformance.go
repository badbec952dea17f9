package drivertest

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
)

// Harness is what Run needs from a backend's test. New, NewSpec are
// required; the rest are capabilities a backend may lack (the Fake runs no
// processes and has no agent), and the subtests or checks that need one are
// skipped, saying why, when it is nil.
//
// The suite gives every sandbox a POSIX shell command, NewSpec(t, "sh", "-c",
// SCRIPT), from this list, so a backend without real processes can tell
// what is meant: ScriptForever, ScriptExit3, ScriptIgnoreTerm (touches
// /tmp/msb-conformance-trapped once TERM is ignored), ScriptCountRuns.
type Harness struct {
	// New returns the driver under test on state of its own, empty, used
	// by one subtest; it removes what it made when t ends (Run has already
	// deleted, with purge, every sandbox the driver lists by then).
	New func(t *testing.T) vmdriver.Driver
	// NewSpec returns a complete spec (layers, agent, an ID no other
	// sandbox has) whose main command is args.
	NewSpec func(t *testing.T, args ...string) vmdriver.Spec

	// Exit ends the running main command of id with code, for backends
	// whose commands do not run: the suite calls it right after Start
	// where its command (ScriptExit3) ends by itself. nil: commands run.
	Exit func(t *testing.T, d vmdriver.Driver, id string, code int)
	// Exec runs argv in the running sandbox id (through its agent) and
	// returns its standard output and exit code; err is for when the
	// code could not be learned. It waits for the agent to answer.
	// AgentExec is one for backends that serve the msb-agent protocol on
	// Endpoint's AgentSocket. nil skips the checks that look inside.
	Exec func(t *testing.T, d vmdriver.Driver, id string, argv ...string) (stdout string, code int, err error)
	// Reopen returns a second driver on d's state, as msbd restarted on
	// the same state directory would make. nil skips the restart subtest.
	Reopen func(t *testing.T, d vmdriver.Driver) vmdriver.Driver
}

// The main commands the suite runs (as "sh", "-c", script).
const (
	// ScriptForever runs until stopped; it ends on SIGTERM.
	ScriptForever = "exec sleep 1000000"
	// ScriptExit3 exits with code 3 at once.
	ScriptExit3 = "exit 3"
	// ScriptIgnoreTerm ignores SIGTERM, says so in /tmp, and runs forever.
	ScriptIgnoreTerm = "trap '' TERM; touch /tmp/msb-conformance-trapped; while :; do sleep 1; done"
	// ScriptCountRuns appends a line to /msb-conformance-runs at every run
	// (in the writable layer), then runs until stopped.
	ScriptCountRuns = "echo run >> /msb-conformance-runs; exec sleep 1000000"
)

// waitLimit bounds every wait of the suite so a broken driver fails instead
// of hanging; it is not a timing assertion (a correct driver is far within).
const waitLimit = 60 * time.Second

// stopGrace is what the suite gives Stop when the command is expected to
// end on SIGTERM.
const stopGrace = 10 * time.Second

// Run runs the conformance suite against h: what every vmdriver.Driver must
// do the same way, so the reconciler can rely on it and the Fake cannot
// drift from real backends.
func Run(t *testing.T, h Harness) {
	if h.New == nil || h.NewSpec == nil {
		t.Fatal("drivertest.Run: Harness.New and Harness.NewSpec are required")
	}
	for _, c := range []struct {
		name string
		fn   func(*suite)
	}{
		{"UnknownID", (*suite).unknownID},
		{"CreateIsNotAlive", (*suite).createIsNotAlive},
		{"StartRuns", (*suite).startRuns},
		{"WaitReturnsExitCode", (*suite).waitReturnsExitCode},
		{"WaitBlocksUntilStop", (*suite).waitBlocksUntilStop},
		{"StopKillsAfterGrace", (*suite).stopKillsAfterGrace},
		{"Idempotent", (*suite).idempotent},
		{"RestartKeepsLayer", (*suite).restartKeepsLayer},
		{"PurgeForgets", (*suite).purgeForgets},
		{"ListIsExact", (*suite).listIsExact},
		{"Files", (*suite).files},
		{"WaitAcrossReopen", (*suite).waitAcrossReopen},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := h.New(t)
			// Registered after New's cleanups, so it runs before them.
			t.Cleanup(func() { purgeAll(t, d) })
			c.fn(&suite{t: t, h: h, d: d, ctx: context.Background()})
		})
	}
}

// purgeAll stops and deletes, with purge, every sandbox d lists.
func purgeAll(t *testing.T, d vmdriver.Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ids, err := d.List(ctx)
	if err != nil {
		t.Errorf("cleanup: List: %v", err)
		return
	}
	for _, id := range ids {
		if err := d.Delete(ctx, id, true); err != nil {
			t.Errorf("cleanup: Delete(%s, purge): %v", id, err)
		}
	}
}

// suite is one subtest's driver and harness.
type suite struct {
	t   *testing.T
	h   Harness
	d   vmdriver.Driver
	ctx context.Context
}

func (s *suite) must(err error, what string) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
}

// spec is a new sandbox's spec running script.
func (s *suite) spec(script string) vmdriver.Spec {
	s.t.Helper()
	return s.h.NewSpec(s.t, "sh", "-c", script)
}

// run creates and starts a sandbox running script and returns its spec.
func (s *suite) run(script string) vmdriver.Spec {
	s.t.Helper()
	spec := s.spec(script)
	s.must(s.d.Create(s.ctx, spec), "Create")
	s.must(s.d.Start(s.ctx, spec.ID), "Start")
	return spec
}

func (s *suite) state(id string) vmdriver.State {
	s.t.Helper()
	st, err := s.d.State(s.ctx, id)
	s.must(err, "State("+id+")")
	return st
}

// wait is d.Wait bounded by waitLimit.
func (s *suite) wait(d vmdriver.Driver, id string) vmdriver.State {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, waitLimit)
	defer cancel()
	st, err := d.Wait(ctx, id)
	s.must(err, "Wait("+id+")")
	return st
}

// waitAsync starts d.Wait(id) now and returns where its result arrives.
func (s *suite) waitAsync(d vmdriver.Driver, id string) <-chan waitResult {
	ctx, cancel := context.WithTimeout(s.ctx, waitLimit)
	ch := make(chan waitResult, 1)
	go func() {
		defer cancel()
		st, err := d.Wait(ctx, id)
		ch <- waitResult{st, err}
	}()
	return ch
}

type waitResult struct {
	st  vmdriver.State
	err error
}

// stoppedResult checks that an asynchronous Wait ended with a stopped state.
func (s *suite) stoppedResult(ch <-chan waitResult, what string) {
	s.t.Helper()
	r := <-ch // bounded by waitLimit inside
	if r.err != nil {
		s.t.Fatalf("%s: Wait: %v", what, r.err)
	}
	if r.st.Status != vmdriver.StatusStopped {
		s.t.Fatalf("%s: Wait returned %+v, want stopped", what, r.st)
	}
}

// exec runs argv through h.Exec and fails the test unless the code is known.
func (s *suite) exec(id string, argv ...string) (string, int) {
	s.t.Helper()
	out, code, err := s.h.Exec(s.t, s.d, id, argv...)
	s.must(err, "Exec "+strings.Join(argv, " "))
	return out, code
}

// eventually runs argv until it exits 0, for a fact the sandbox's command
// makes true soon after it starts, and returns its output.
func (s *suite) eventually(id string, argv ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		out, code := s.exec(id, argv...)
		if code == 0 {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%q in %s still exits %d after %v", argv, id, code, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *suite) unknownID() {
	t, d, id := s.t, s.d, "msb-conformance-unknown"
	if _, err := d.State(s.ctx, id); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("State of an unknown id: %v, want ErrNotFound", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, waitLimit)
	defer cancel()
	if _, err := d.Wait(ctx, id); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("Wait on an unknown id: %v, want ErrNotFound", err)
	}
	if err := d.Start(s.ctx, id); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("Start of an unknown id: %v, want ErrNotFound", err)
	}
	if err := d.Stop(s.ctx, id, time.Second); err != nil {
		t.Errorf("Stop of an unknown id: %v, want nil (nothing to do)", err)
	}
	for _, purge := range []bool{false, true} {
		if err := d.Delete(s.ctx, id, purge); err != nil {
			t.Errorf("Delete(purge=%v) of an unknown id: %v, want nil (nothing to do)", purge, err)
		}
	}
	// Endpoint says where things will be; only a malformed id is an error.
	if _, err := d.Endpoint(id); err != nil {
		t.Errorf("Endpoint of an unknown but well-formed id: %v, want where it would be", err)
	}
	if _, err := d.Endpoint(""); err == nil {
		t.Errorf("Endpoint of the empty id: no error")
	}
	if ids, err := d.List(s.ctx); err != nil || len(ids) != 0 {
		t.Errorf("List after all that = %v, %v; want nothing", ids, err)
	}
}

func (s *suite) createIsNotAlive() {
	t := s.t
	spec := s.spec(ScriptForever)
	s.must(s.d.Create(s.ctx, spec), "Create")
	st := s.state(spec.ID)
	if st.Status != vmdriver.StatusCreated && st.Status != vmdriver.StatusStopped {
		t.Errorf("State after Create = %+v, want created or stopped", st)
	}
	if st.Status.Alive() || st.Exited {
		t.Errorf("State after Create = %+v: alive or with an exit code", st)
	}
	// Not alive: Wait returns at once with the same answer.
	if got := s.wait(s.d, spec.ID); got.Status.Alive() {
		t.Errorf("Wait after Create = %+v, want not alive", got)
	}
	if ids, err := s.d.List(s.ctx); err != nil || !slices.Equal(ids, []string{spec.ID}) {
		t.Errorf("List = %v, %v; want [%s]", ids, err, spec.ID)
	}
}

func (s *suite) startRuns() {
	t := s.t
	spec := s.run(ScriptForever)
	st := s.state(spec.ID)
	if st.Status != vmdriver.StatusRunning || !st.Status.Alive() {
		t.Fatalf("State after Start = %+v, want running", st)
	}
	if st.StartedAt.IsZero() {
		t.Errorf("State after Start = %+v: no StartedAt", st)
	}
	if st.PID <= 0 {
		t.Errorf("State after Start = %+v: no PID while alive", st)
	}
	ep, err := s.d.Endpoint(spec.ID)
	s.must(err, "Endpoint")
	if !filepath.IsAbs(ep.AgentSocket) || !filepath.IsAbs(ep.LogDir) {
		t.Errorf("Endpoint = %+v, want absolute paths", ep)
	}
	if s.h.Exec == nil {
		t.Log("not checking that the agent answers at the endpoint: the harness has no Exec")
		return
	}
	if out, code := s.exec(spec.ID, "echo", "hello"); code != 0 || out != "hello\n" {
		t.Errorf("exec echo hello: %q, exit %d", out, code)
	}
}

func (s *suite) waitReturnsExitCode() {
	t := s.t
	spec := s.run(ScriptExit3)
	if s.h.Exit != nil {
		s.h.Exit(t, s.d, spec.ID, 3)
	}
	st := s.wait(s.d, spec.ID)
	if st.Status != vmdriver.StatusStopped || !st.Exited || st.ExitCode != 3 {
		t.Errorf("Wait = %+v, want stopped, exited with code 3", st)
	}
	if st := s.state(spec.ID); st.Status != vmdriver.StatusStopped || !st.Exited || st.ExitCode != 3 || st.PID != 0 {
		t.Errorf("State after the exit = %+v, want stopped, exited with code 3, no PID", st)
	}
	// Ended: a new Wait returns at once.
	if st := s.wait(s.d, spec.ID); st.Status != vmdriver.StatusStopped {
		t.Errorf("second Wait = %+v", st)
	}
}

func (s *suite) waitBlocksUntilStop() {
	t := s.t
	spec := s.run(ScriptForever)
	// While it runs, Wait blocks until its context ends and says so.
	ctx, cancel := context.WithTimeout(s.ctx, 200*time.Millisecond)
	st, err := s.d.Wait(ctx, spec.ID)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running sandbox with a short context: %+v, %v; want context.DeadlineExceeded", st, err)
	}
	if st := s.state(spec.ID); st.Status != vmdriver.StatusRunning {
		t.Fatalf("State = %+v, want still running", st)
	}
	ctx, cancel = context.WithCancel(s.ctx)
	cancel()
	if _, err := s.d.Wait(ctx, spec.ID); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context: %v, want context.Canceled", err)
	}
	ch := s.waitAsync(s.d, spec.ID)
	s.must(s.d.Stop(s.ctx, spec.ID, stopGrace), "Stop")
	s.stoppedResult(ch, "a Wait pending while Stop ran")
	if st := s.state(spec.ID); st.Status.Alive() {
		t.Errorf("State after Stop = %+v", st)
	}
}

func (s *suite) stopKillsAfterGrace() {
	t := s.t
	spec := s.run(ScriptIgnoreTerm)
	if s.h.Exec != nil {
		// So the SIGTERM surely finds the trap set.
		s.eventually(spec.ID, "test", "-e", "/tmp/msb-conformance-trapped")
	}
	ch := s.waitAsync(s.d, spec.ID)
	s.must(s.d.Stop(s.ctx, spec.ID, 300*time.Millisecond), "Stop")
	st := s.state(spec.ID)
	if st.Status != vmdriver.StatusStopped || st.PID != 0 {
		t.Errorf("State right after Stop returned = %+v, want stopped without a PID", st)
	}
	if st.Exited && st.ExitCode == 0 {
		t.Errorf("State = %+v: a killed command reports success", st)
	}
	s.stoppedResult(ch, "a Wait pending while Stop killed")
}

func (s *suite) idempotent() {
	t := s.t
	spec := s.spec(ScriptForever)
	s.must(s.d.Create(s.ctx, spec), "Create")
	s.must(s.d.Create(s.ctx, spec), "second Create")
	s.must(s.d.Start(s.ctx, spec.ID), "Start")
	first := s.state(spec.ID)
	s.must(s.d.Create(s.ctx, spec), "Create while running")
	s.must(s.d.Start(s.ctx, spec.ID), "second Start")
	if again := s.state(spec.ID); again.Status != vmdriver.StatusRunning || again.PID != first.PID || !again.StartedAt.Equal(first.StartedAt) {
		t.Errorf("after Create and Start on a running sandbox: %+v, before %+v; want the same run", again, first)
	}
	s.must(s.d.Stop(s.ctx, spec.ID, stopGrace), "Stop")
	s.must(s.d.Stop(s.ctx, spec.ID, stopGrace), "second Stop")
	s.must(s.d.Delete(s.ctx, spec.ID, false), "Delete")
	s.must(s.d.Delete(s.ctx, spec.ID, false), "second Delete")
	if st := s.state(spec.ID); st.Status.Alive() {
		t.Errorf("State after Delete(purge=false) = %+v", st)
	}
	s.must(s.d.Delete(s.ctx, spec.ID, true), "Delete(purge)")
	s.must(s.d.Delete(s.ctx, spec.ID, true), "second Delete(purge)")
	if _, err := s.d.State(s.ctx, spec.ID); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("State after Delete(purge): %v, want ErrNotFound", err)
	}
}

// restartKeepsLayer: Delete without purge keeps the sandbox (listed,
// stopped) and its writable layer; Start, or Create with the same spec and
// Start, runs it again on that layer.
func (s *suite) restartKeepsLayer() {
	t := s.t
	spec := s.run(ScriptCountRuns)
	runs := func(n int) {
		t.Helper()
		if s.h.Exec == nil {
			return
		}
		want := strings.Repeat("run\n", n)
		s.eventually(spec.ID, "sh", "-c", `test "$(cat /msb-conformance-runs)" = "`+strings.TrimSuffix(want, "\n")+`"`)
	}
	runs(1)
	s.must(s.d.Stop(s.ctx, spec.ID, stopGrace), "Stop")
	s.must(s.d.Delete(s.ctx, spec.ID, false), "Delete(purge=false)")
	if ids, err := s.d.List(s.ctx); err != nil || !slices.Contains(ids, spec.ID) {
		t.Fatalf("List after Delete(purge=false) = %v, %v; want it kept", ids, err)
	}
	if st := s.state(spec.ID); st.Status != vmdriver.StatusStopped {
		t.Errorf("State after Delete(purge=false) = %+v, want stopped", st)
	}
	s.must(s.d.Start(s.ctx, spec.ID), "Start after Delete(purge=false)")
	if st := s.state(spec.ID); st.Status != vmdriver.StatusRunning {
		t.Fatalf("State after the second Start = %+v", st)
	}
	runs(2)
	s.must(s.d.Delete(s.ctx, spec.ID, false), "Delete(purge=false) while running")
	s.must(s.d.Create(s.ctx, spec), "Create again")
	s.must(s.d.Start(s.ctx, spec.ID), "third Start")
	runs(3)
	if s.h.Exec == nil {
		t.Log("not checking the writable layer across runs: the harness has no Exec")
	}
}

func (s *suite) purgeForgets() {
	t := s.t
	spec := s.run(ScriptForever)
	ch := s.waitAsync(s.d, spec.ID)
	s.must(s.d.Delete(s.ctx, spec.ID, true), "Delete(purge)")
	if r := <-ch; r.err != nil && !errors.Is(r.err, vmdriver.ErrNotFound) {
		t.Errorf("a Wait pending while Delete(purge) ran: %+v, %v; want a stopped state or ErrNotFound", r.st, r.err)
	} else if r.err == nil && r.st.Status.Alive() {
		t.Errorf("a Wait pending while Delete(purge) ran: %+v", r.st)
	}
	if ids, err := s.d.List(s.ctx); err != nil || slices.Contains(ids, spec.ID) {
		t.Errorf("List after Delete(purge) = %v, %v", ids, err)
	}
	if _, err := s.d.State(s.ctx, spec.ID); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("State after Delete(purge): %v, want ErrNotFound", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, waitLimit)
	defer cancel()
	if _, err := s.d.Wait(ctx, spec.ID); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("Wait after Delete(purge): %v, want ErrNotFound", err)
	}
	if err := s.d.Start(s.ctx, spec.ID); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("Start after Delete(purge): %v, want ErrNotFound", err)
	}
}

func (s *suite) listIsExact() {
	t := s.t
	var want []string
	for i := range 3 {
		spec := s.spec(ScriptForever)
		s.must(s.d.Create(s.ctx, spec), "Create")
		if i == 0 {
			s.must(s.d.Start(s.ctx, spec.ID), "Start")
		}
		want = append(want, spec.ID)
	}
	check := func(want []string) {
		t.Helper()
		got, err := s.d.List(s.ctx)
		s.must(err, "List")
		got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("List = %v, want %v", got, want)
		}
	}
	check(want)
	s.must(s.d.Delete(s.ctx, want[0], false), "Delete(purge=false)")
	check(want)
	s.must(s.d.Delete(s.ctx, want[1], true), "Delete(purge)")
	check([]string{want[0], want[2]})
}

func (s *suite) files() {
	t := s.t
	if s.h.Exec == nil {
		t.Skip("placed files are checked from inside the sandbox: the harness has no Exec")
	}
	spec := s.spec(ScriptForever)
	spec.Files = []vmdriver.File{
		{Path: "/etc/msb-conformance/hello.conf", Data: []byte("hello\n")},
		{Path: "/msb-conformance-ro", Data: []byte("read only\n"), Mode: 0o444},
	}
	s.must(s.d.Create(s.ctx, spec), "Create")
	s.must(s.d.Start(s.ctx, spec.ID), "Start")
	check := func(when string) {
		t.Helper()
		for _, f := range []struct{ path, data, mode string }{
			{"/etc/msb-conformance/hello.conf", "hello\n", "644"},
			{"/msb-conformance-ro", "read only\n", "444"},
		} {
			if out, code := s.exec(spec.ID, "cat", f.path); code != 0 || out != f.data {
				t.Errorf("%s: cat %s: %q, exit %d; want %q", when, f.path, out, code, f.data)
			}
			if out, code := s.exec(spec.ID, "stat", "-c", "%a", f.path); code != 0 || strings.TrimSpace(out) != f.mode {
				t.Errorf("%s: mode of %s: %q, exit %d; want %s", when, f.path, out, code, f.mode)
			}
			// As the sandbox's root, which may write anything its own.
			if _, code := s.exec(spec.ID, "sh", "-c", "echo changed > "+f.path); code == 0 {
				t.Errorf("%s: %s is writable in the sandbox", when, f.path)
			}
			if _, code := s.exec(spec.ID, "rm", "-f", f.path); code == 0 {
				t.Errorf("%s: %s can be removed in the sandbox", when, f.path)
			}
		}
	}
	check("first run")
	// Rebuilt from what was saved when the rest of the sandbox is.
	s.must(s.d.Stop(s.ctx, spec.ID, stopGrace), "Stop")
	s.must(s.d.Delete(s.ctx, spec.ID, false), "Delete(purge=false)")
	s.must(s.d.Start(s.ctx, spec.ID), "Start again")
	check("after Delete(purge=false) and Start")
}

// waitAcrossReopen: a Wait begun on one driver instance returns when the run
// ends through another on the same state (msbd restarted: the old process's
// waits are gone, the new one adopts the sandbox and waits itself).
func (s *suite) waitAcrossReopen() {
	t := s.t
	if s.h.Reopen == nil {
		t.Skip("the harness cannot open a second driver on the same state (Reopen is nil)")
	}
	spec := s.run(ScriptForever)
	before := s.state(spec.ID)
	old := s.waitAsync(s.d, spec.ID)
	d2 := s.h.Reopen(t, s.d)
	after, err := d2.State(s.ctx, spec.ID)
	s.must(err, "State on the reopened driver")
	if after.Status != vmdriver.StatusRunning || after.PID != before.PID {
		t.Fatalf("reopened driver sees %+v, the first saw %+v", after, before)
	}
	ids, err := d2.List(s.ctx)
	s.must(err, "List on the reopened driver")
	if !slices.Equal(ids, []string{spec.ID}) {
		t.Errorf("reopened driver lists %v, want [%s]", ids, spec.ID)
	}
	adopted := s.waitAsync(d2, spec.ID)
	s.must(d2.Stop(s.ctx, spec.ID, stopGrace), "Stop on the reopened driver")
	s.stoppedResult(old, "the first driver's Wait")
	s.stoppedResult(adopted, "the reopened driver's Wait")
}
