package drivertest

// The conformance suite's subtests (see Run for the list).

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"msb.dev/msb/vmdriver"
)

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
