package container

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
)

// TestWaitPidGuard: a pid that is not (or no longer) the sandbox's init is
// never waited on: waitPid returns at once for it, here for this test
// process's own pid, which is alive and would block a plain pidfd wait.
func TestWaitPidGuard(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := f.spec("exec sleep 1000")
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	if err := f.d.waitPid(ctx, spec.ID, os.Getpid()); err != nil {
		t.Fatalf("waitPid on a pid that is not the init: %v, want an immediate nil", err)
	}
	if ctx.Err() != nil {
		t.Fatal("waitPid blocked on a pid that is not the sandbox's init")
	}
	must(t, f.d.Stop(ctx, spec.ID, 0))
}

// TestWaitPaused: a paused sandbox is alive (runc's own state is asked, as
// the fast path gives up on frozen cgroups); Wait blocks on it and returns
// once it is stopped.
func TestWaitPaused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("exec sleep 1000")
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	if _, err := f.d.runc(ctx, "", "pause", spec.ID); err != nil {
		t.Skipf("runc pause does not work here: %v", err)
	}
	st, err := f.d.State(ctx, spec.ID)
	must(t, err)
	if st.Status != vmdriver.StatusPaused || st.PID <= 0 {
		t.Fatalf("State of a paused sandbox = %+v", st)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = f.d.Wait(short, spec.ID)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a paused sandbox: %v, want it to block until its context ends", err)
	}
	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		st, err := f.d.Wait(wctx, spec.ID)
		if err == nil && st.Status != vmdriver.StatusStopped {
			err = errors.New("Wait returned " + string(st.Status))
		}
		done <- err
	}()
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second)) // resumes, then stops
	must(t, <-done)
}
