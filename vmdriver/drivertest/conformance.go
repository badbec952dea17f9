package drivertest

import (
	"context"
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
