package reconciler

import (
	"time"

	"golang.org/x/sys/unix"
)

// waitPidExit blocks until process pid exits. It uses a pidfd, which works
// for processes that are not our children (runc's detached containers), and
// falls back to polling where pidfds are unavailable. stillOurs is asked once
// the pidfd holds the process: the pid may have been reused between reading
// it and opening the pidfd, and then it is not the process to wait for (the
// return is at once, and the caller looks again).
func waitPidExit(pid int, stillOurs func() bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		for unix.Kill(pid, 0) == nil && stillOurs() {
			time.Sleep(500 * time.Millisecond)
		}
		return
	}
	defer unix.Close(fd)
	if !stillOurs() {
		return
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}
