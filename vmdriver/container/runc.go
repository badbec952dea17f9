package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"msb.dev/msb/vmdriver"
)

// errNoContainer is returned by runc calls about a container runc does not know.
var errNoContainer = errors.New("runc: container does not exist")

// runcState is the part of `runc state` output the driver uses, with runc's
// status word already mapped to a vmdriver.Status (see runcStatus).
type runcState struct {
	ID      string
	PID     int
	Status  vmdriver.Status
	Created time.Time
}

// runcStatus maps runc's status words to vmdriver's; it is the only place
// that knows them. "pausing" (the freezer has not finished) is paused: its
// processes are still there.
func runcStatus(s string) (vmdriver.Status, error) {
	switch s {
	case "created":
		return vmdriver.StatusCreated, nil
	case "running":
		return vmdriver.StatusRunning, nil
	case "pausing", "paused":
		return vmdriver.StatusPaused, nil
	case "stopped":
		return vmdriver.StatusStopped, nil
	}
	return "", fmt.Errorf("runc reports an unknown status %q", s)
}

// runc runs one runc command against the driver's --root. logPath, when not
// empty, receives runc's JSON log; runc's own error messages go there too, so
// stderr can stay /dev/null (a detached container inherits runc's stdio, and a
// pipe would keep it open for the container's whole life).
func (d *Driver) runc(ctx context.Context, logPath string, args ...string) ([]byte, error) {
	full := []string{"--root", d.runcRoot}
	if logPath != "" {
		// Truncate: only the last call's messages matter.
		if err := os.WriteFile(logPath, nil, 0o600); err != nil {
			return nil, err
		}
		full = append(full, "--log", logPath, "--log-format", "json")
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, d.runcPath, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	if logPath == "" {
		cmd.Stderr = &stderr
	}
	// Stdin nil: /dev/null. With logPath, stdout/stderr of a detached container
	// must not be pipes, so the caller of a detaching command passes none.
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if cerr := ctx.Err(); cerr != nil {
		// Ended (or never started) by the caller's deadline: say so in a
		// way errors.Is can tell (Wait blocks on a paused sandbox until it).
		return nil, fmt.Errorf("runc %s: %w", args[0], cerr)
	}
	msg := strings.TrimSpace(stderr.String())
	if logPath != "" {
		msg = lastRuncError(logPath)
	}
	if strings.Contains(msg, "does not exist") || strings.Contains(msg, "container not found") {
		return nil, fmt.Errorf("runc %s: %s: %w", args[0], msg, errNoContainer)
	}
	if msg == "" {
		msg = err.Error()
	}
	return nil, fmt.Errorf("runc %s: %s", args[0], msg)
}

// runcDetached runs a runc command whose container outlives it (run -d,
// create): stdio is /dev/null and errors come from the JSON log. extra are
// descriptors 3, 4, ... of runc (passed on to the container with
// --preserve-fds). runc starts from the calling thread, in its namespaces:
// a start calls it on the thread of its own mount namespace (startns.go).
func (d *Driver) runcDetached(ctx context.Context, logPath string, extra []*os.File, args ...string) error {
	full := []string{"--root", d.runcRoot, "--log", logPath, "--log-format", "json"}
	full = append(full, args...)
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		return err
	}
	// Not CommandContext: killing runc halfway through creating a container
	// leaves more debris than letting it finish; runc create/run -d is short.
	cmd := exec.Command(d.runcPath, full...)
	cmd.ExtraFiles = extra
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		msg := lastRuncError(logPath)
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("runc %s: %s (log %s)", args[0], msg, logPath)
	}
	return ctx.Err()
}

// lastRuncError returns the last error-level message of a runc JSON log.
func lastRuncError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if e.Level == "error" || e.Level == "fatal" {
			last = e.Msg
		}
	}
	return last
}

// state returns runc's view of id, or errNoContainer.
func (d *Driver) state(ctx context.Context, id string) (runcState, error) {
	var st runcState
	if _, err := os.Stat(d.runcRoot + "/" + id); errors.Is(err, os.ErrNotExist) {
		return st, errNoContainer
	}
	if fast, ok := d.fastState(id); ok {
		return fast, nil
	}
	out, err := d.runc(ctx, "", "state", id)
	if err != nil {
		return st, err
	}
	return parseRuncState(id, out)
}

// parseRuncState decodes the output of `runc state`.
func parseRuncState(id string, out []byte) (runcState, error) {
	var raw struct {
		ID      string    `json:"id"`
		PID     int       `json:"pid"`
		Status  string    `json:"status"`
		Created time.Time `json:"created"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return runcState{}, fmt.Errorf("runc state %s: %w", id, err)
	}
	status, err := runcStatus(raw.Status)
	if err != nil {
		return runcState{}, fmt.Errorf("runc state %s: %w", id, err)
	}
	return runcState{ID: raw.ID, PID: raw.PID, Status: status, Created: raw.Created}, nil
}

// list returns the IDs runc knows under the driver's root.
func (d *Driver) list(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(d.runcRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && validID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// libcontainerState is the part of runc's own state.json that fastState reads.
type libcontainerState struct {
	ID        string    `json:"id"`
	InitPID   int       `json:"init_process_pid"`
	InitStart uint64    `json:"init_process_start"`
	Created   time.Time `json:"created"`
}

// fastState answers State from runc's state.json and /proc instead of
// exec'ing `runc state`, which costs tens of milliseconds and runs on every
// reconcile. It decides as runc does: the init process is alive when its pid
// exists with the recorded start time and is no zombie; "created" while the
// exec fifo still exists. Anything unexpected (no file, a format it does not
// know, a paused container) returns ok=false and the caller asks runc.
func (d *Driver) fastState(id string) (runcState, bool) {
	dir := filepath.Join(d.runcRoot, id)
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return runcState{}, false
	}
	var ls libcontainerState
	if err := json.Unmarshal(data, &ls); err != nil || ls.InitPID <= 0 || ls.InitStart == 0 {
		return runcState{}, false
	}
	st := runcState{ID: id, Created: ls.Created, Status: vmdriver.StatusStopped}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ls.InitPID))
	if err == nil {
		// Fields after the command name (which may hold spaces) start at ") ".
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 20 {
			return runcState{}, false
		}
		start, err := strconv.ParseUint(f[19], 10, 64)
		if err != nil {
			return runcState{}, false
		}
		if start == ls.InitStart && f[0] != "Z" && f[0] != "X" {
			if f[0] == "T" || frozen(d, id) {
				return runcState{}, false // paused or stopped by a signal: ask runc
			}
			st.Status = vmdriver.StatusRunning
			st.PID = ls.InitPID
			if _, err := os.Stat(filepath.Join(dir, "exec.fifo")); err == nil {
				st.Status = vmdriver.StatusCreated
			}
		}
	}
	return st, true
}

// frozen reports whether the sandbox's cgroup is frozen (runc pause).
func frozen(d *Driver, id string) bool {
	cg := d.cgroupsPath(id)
	if b, err := os.ReadFile("/sys/fs/cgroup/freezer" + cg + "/freezer.state"); err == nil && strings.TrimSpace(string(b)) != "THAWED" {
		return true
	}
	// v2: runc's cgroup is the sandbox's, or its agent leaf (cgroupv2.go).
	for _, p := range []string{cg, cg + "/" + agentCgroup} {
		if b, err := os.ReadFile("/sys/fs/cgroup" + p + "/cgroup.freeze"); err == nil && strings.TrimSpace(string(b)) == "1" {
			return true
		}
	}
	return false
}

// filterPipe returns the read end of a pipe holding b and closed for writing:
// how a compiled seccomp filter reaches the agent without ever being a file
// the sandbox could see or change. b must fit in the pipe buffer (a BPF
// program is at most 32 KiB; a pipe holds 64 KiB).
func filterPipe(b []byte) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	_, err = w.Write(b)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("seccomp filter pipe: %w", err)
	}
	return r, nil
}
