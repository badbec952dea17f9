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
	"strings"
	"time"
)

// errNoContainer is returned by runc calls about a container runc does not know.
var errNoContainer = errors.New("runc: container does not exist")

// runcState is the part of `runc state` output the driver uses.
type runcState struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`
	Status  string    `json:"status"`
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
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
// create): stdio is /dev/null and errors come from the JSON log.
func (d *Driver) runcDetached(ctx context.Context, logPath string, args ...string) error {
	full := []string{"--root", d.runcRoot, "--log", logPath, "--log-format", "json"}
	full = append(full, args...)
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		return err
	}
	// Not CommandContext: killing runc halfway through creating a container
	// leaves more debris than letting it finish; runc create/run -d is short.
	cmd := exec.Command(d.runcPath, full...)
	if err := cmd.Run(); err != nil {
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
	out, err := d.runc(ctx, "", "state", id)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("runc state %s: %w", id, err)
	}
	return st, nil
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
