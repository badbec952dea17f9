package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
)

// Stop implements vmdriver.Driver: SIGTERM, then SIGKILL after grace. Stopping
// a stopped or unknown sandbox does nothing.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
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
	if st.Status == vmdriver.StatusPaused {
		d.runc(ctx, "", "resume", id) // a frozen process cannot handle SIGTERM
	}
	if st.Status != vmdriver.StatusCreated && grace > 0 {
		if _, err := d.runc(ctx, "", "kill", id, "TERM"); err != nil && !notRunning(err) {
			return err
		}
		if stopped, err := d.waitStopped(ctx, id, grace); err != nil || stopped {
			return err
		}
	}
	if _, err := d.runc(ctx, "", "kill", "--all", id, "KILL"); err != nil && !notRunning(err) {
		return err
	}
	if stopped, err := d.waitStopped(ctx, id, 10*time.Second); err != nil || stopped {
		return err
	}
	return fmt.Errorf("sandbox %s: still running 10s after SIGKILL", id)
}

func notRunning(err error) bool {
	return errors.Is(err, errNoContainer) || strings.Contains(err.Error(), "not running") ||
		strings.Contains(err.Error(), "process already finished")
}

// waitStopped waits until id's init has ended (see waitInit), at most
// timeout; it reports whether it has.
func (d *Driver) waitStopped(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := d.waitInit(wctx, id)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case wctx.Err() != nil:
		return false, nil
	}
	return false, err
}

// State implements vmdriver.Driver. A sandbox whose directory exists but that
// runc does not know (after Delete(purge=false), or before the first Start)
// is stopped. The exit code is the one the agent wrote.
func (d *Driver) State(ctx context.Context, id string) (vmdriver.State, error) {
	if err := validID(id); err != nil {
		return vmdriver.State{}, err
	}
	st, err := d.state(ctx, id)
	if errors.Is(err, errNoContainer) {
		if _, err := os.Stat(d.SandboxDir(id)); errors.Is(err, os.ErrNotExist) {
			return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
		}
		out := vmdriver.State{Status: vmdriver.StatusStopped}
		out.ExitCode, out.Exited = readExitCode(d.agentDir(id))
		out.OOMKilled = d.endedByOOM(id, out)
		return out, nil
	}
	if err != nil {
		return vmdriver.State{}, err
	}
	out := vmdriver.State{Status: st.Status, StartedAt: st.Created}
	if st.Status == vmdriver.StatusStopped {
		out.ExitCode, out.Exited = readExitCode(d.agentDir(id))
		out.OOMKilled = d.endedByOOM(id, out)
	} else {
		out.PID = st.PID
	}
	return out, nil
}

// Endpoint implements vmdriver.Driver: the agent directory, bind-mounted at
// /.msb in the sandbox, holds both the agent's socket and the main
// command's log. Only a malformed id is an error: the paths are where they
// will be, whether or not the sandbox exists yet.
func (d *Driver) Endpoint(id string) (vmdriver.Endpoint, error) {
	if err := validID(id); err != nil {
		return vmdriver.Endpoint{}, err
	}
	dir := d.agentDir(id)
	return vmdriver.Endpoint{AgentSocket: filepath.Join(dir, agent.SocketFile), LogDir: dir}, nil
}

// Delete implements vmdriver.Driver. It kills and deletes the runc container,
// unmounts everything under the sandbox directory, removes leftover cgroups
// and the bundle; purge also removes the writable layer and the directory.
// Deleting an unknown sandbox does nothing.
func (d *Driver) Delete(ctx context.Context, id string, purge bool) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	d.takeUserNS(id).release()
	if _, err := d.runc(ctx, "", "delete", "--force", id); err != nil && !errors.Is(err, errNoContainer) {
		// runc could not load its state (corrupt or half-written): if no
		// process is left in the cgroups, remove the state by hand below.
		if procs := d.cgroupProcs(id); procs > 0 {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(d.runcRoot, id)); err != nil {
		return err
	}
	if err := d.removeCgroups(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	dir := d.SandboxDir(id)
	// A stopped sandbox keeps its disk (see disk.go): its log and exit
	// code are there.
	var keep []string
	if !purge {
		keep = []string{d.diskDir(id), d.agentMountPoint(id)}
	}
	if err := unmountAllBut(dir, keep...); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if purge {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
		d.ids.release(id)
		return nil
	}
	for _, p := range []string{d.bundleDir(id), filepath.Join(dir, "pid")} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	return nil
}
