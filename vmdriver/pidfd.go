package vmdriver

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pidfdPollSlice is how long WaitPidfd blocks in poll(2) at a time when the
// pidfd cannot go to Go's poller, so a cancelled context is still heard.
const pidfdPollSlice = 200 * time.Millisecond

// Both drivers wait for the process that holds a sandbox (runc's init, the
// krun runner) through a pidfd, so neither polls /proc.

// WaitPidfd waits until the pidfd fd (which it closes) is readable. The
// descriptor goes to Go's poller, so waiting costs no thread and ctx ends it
// through a read deadline.
func WaitPidfd(ctx context.Context, fd int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	exited := func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err == nil && n > 0
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(exited)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		return nil
	}
	// Not registered with the poller (should not happen for a pidfd):
	// block in poll(2) a slice at a time so ctx is still heard.
	for {
		var done bool
		if cerr := rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(pfd, int(pidfdPollSlice/time.Millisecond))
			done = n > 0
		}); cerr != nil {
			return fmt.Errorf("waiting on pidfd: %w (and %v)", err, cerr)
		}
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
