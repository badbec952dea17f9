package krun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// Runner processes. A VM's run is the life of its runner: msbd started it,
// but after an msbd restart it is nobody's child here, so the driver finds
// it through runner.pid (pid and start time, so a reused pid is never taken
// for it) and waits on it with a pidfd.

// procStat returns the state letter and start time (clock ticks since
// boot) of pid from /proc/PID/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields follow the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

func (d *Driver) writePid(id string, pid int) error {
	_, start, err := procStat(pid)
	if err != nil {
		return err
	}
	p := filepath.Join(d.sandboxDir(id), runnerPidFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", pid, start)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// runner returns the pid of id's runner while it runs, 0 otherwise.
func (d *Driver) runner(id string) (pid int, startedAt time.Time) {
	p := filepath.Join(d.sandboxDir(id), runnerPidFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, time.Time{}
	}
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil || pid <= 0 {
		return 0, time.Time{}
	}
	state, now, err := procStat(pid)
	if err != nil || now != start || state == 'Z' || state == 'X' {
		return 0, time.Time{}
	}
	if fi, err := os.Stat(p); err == nil {
		startedAt = fi.ModTime()
	}
	return pid, startedAt
}

// state is State without the id check.
func (d *Driver) state(id string) (vmdriver.State, error) {
	if _, err := os.Stat(d.sandboxDir(id)); errors.Is(err, os.ErrNotExist) {
		return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
	} else if err != nil {
		return vmdriver.State{}, err
	}
	if pid, at := d.runner(id); pid > 0 {
		return vmdriver.State{Status: vmdriver.StatusRunning, PID: pid, StartedAt: at}, nil
	}
	out := vmdriver.State{Status: vmdriver.StatusStopped}
	out.ExitCode, out.Exited = d.host.ExitCode(id)
	return out, nil
}

// State implements vmdriver.Driver. The exit code is the one the agent
// wrote into the agent directory, which the guest shares with the host.
func (d *Driver) State(ctx context.Context, id string) (vmdriver.State, error) {
	if err := validID(id); err != nil {
		return vmdriver.State{}, err
	}
	return d.state(id)
}

// Wait implements vmdriver.Driver, as the container driver does: it
// returns when the run it found has ended.
func (d *Driver) Wait(ctx context.Context, id string) (vmdriver.State, error) {
	if err := validID(id); err != nil {
		return vmdriver.State{}, err
	}
	waited := 0
	for {
		st, err := d.state(id)
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
		if err := d.waitRun(ctx, id, st.PID); err != nil {
			return vmdriver.State{}, err
		}
	}
}

// waitRun returns once pid is no longer id's running runner, or with
// ctx's error.
func (d *Driver) waitRun(ctx context.Context, id string, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		// No pidfds (kernel < 5.3): look again now and then.
		for {
			if p, _ := d.runner(id); p != pid {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// The pid might have been reused between reading it and opening the
	// pidfd: once the pidfd holds a process, asking again settles it.
	if p, _ := d.runner(id); p != pid {
		unix.Close(fd)
		return nil
	}
	return vmdriver.WaitPidfd(ctx, fd)
}

// killRunner kills id's runner and everything in its cgroup (with the
// stand-in, the guest's processes run there too) and waits until it is gone.
func (d *Driver) killRunner(id string) error {
	pid, _ := d.runner(id)
	d.killCgroup(id)
	if pid > 0 {
		unix.Kill(pid, unix.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.waitRun(ctx, id, pid); err != nil {
			return fmt.Errorf("runner %d still running 10s after SIGKILL", pid)
		}
	}
	return d.waitCgroupEmpty(id, 10*time.Second)
}
