package container

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// Waiting for a run to end. A sandbox's run is the life of its init process
// (the agent, PID 1 in the container). msbd is not its parent: `runc run -d`
// detaches it, and after an msbd restart nothing is anyone's child, so the
// driver waits with a pidfd, which any process may hold on any pid and which
// turns readable when the process has exited (zombie or reaped). Only where
// pidfd_open is missing (kernels before 5.3) does it fall back to looking
// again every pollFallback.
const pollFallback = 200 * time.Millisecond

// Wait implements vmdriver.Driver. It returns at once for a sandbox that is
// not alive (created, stopped) and otherwise blocks until the run it found
// ends. If that run ended and another has already started before Wait
// looked again (a Start from elsewhere), it returns StatusStopped without an
// exit code: the run waited for is over, and how it ended was overwritten.
// A Delete with purge while it waits makes it return ErrNotFound.
func (d *Driver) Wait(ctx context.Context, id string) (vmdriver.State, error) {
	if err := validID(id); err != nil {
		return vmdriver.State{}, err
	}
	waited := 0 // the init pid of the run being waited for
	for {
		st, err := d.State(ctx, id)
		if err != nil {
			return vmdriver.State{}, err
		}
		if !st.Status.Alive() {
			return st, nil
		}
		if waited != 0 && st.PID != waited {
			return vmdriver.State{Status: vmdriver.StatusStopped}, nil
		}
		waited = st.PID
		if err := d.waitPid(ctx, id, st.PID); err != nil {
			return vmdriver.State{}, err
		}
	}
}

// waitInit blocks until id has no live init process: runc says stopped or
// knows no container. Unlike Wait it also waits out a created container
// (Stop kills those too).
func (d *Driver) waitInit(ctx context.Context, id string) error {
	for {
		st, err := d.state(ctx, id)
		if errors.Is(err, errNoContainer) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.Status == vmdriver.StatusStopped {
			return nil
		}
		if err := d.waitPid(ctx, id, st.PID); err != nil {
			return err
		}
	}
}

// waitPid returns when process pid has exited, when pid is no longer id's
// init (so the caller, which looks at the state again after every return,
// never waits on a pid the kernel has handed to another process), or with
// ctx's error. A return is not proof of an exit: callers look again.
func (d *Driver) waitPid(ctx context.Context, id string, pid int) error {
	if pid <= 0 {
		return sleepCtx(ctx, pollFallback)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	if err != nil {
		// No pidfds here (ENOSYS) or not allowed: look again later.
		return sleepCtx(ctx, pollFallback)
	}
	// The pid was read before the pidfd was opened: it may have been
	// reused since. Once the pidfd holds a process, asking again whether
	// pid is id's init settles it (the state checks the init's start
	// time), and a process that is id's init now was so at the open too.
	if st, err := d.state(ctx, id); err != nil || st.Status == vmdriver.StatusStopped || st.PID != pid {
		unix.Close(fd)
		return nil
	}
	return vmdriver.WaitPidfd(ctx, fd)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
