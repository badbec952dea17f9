package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ReadExitCode returns the main command's exit code once the agent has written it.
// ok is false (and err nil) while the main command has not exited.
func ReadExitCode(dir string) (code int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, ExitCodeFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	code, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", filepath.Join(dir, ExitCodeFile), err)
	}
	return code, true, nil
}

func writeExitCode(dir string, code int) error {
	return writeFileAtomic(filepath.Join(dir, ExitCodeFile), []byte(strconv.Itoa(code)+"\n"))
}

// readyPoll is how often WaitReady looks for the ready file. A stat costs about a
// microsecond, and this sits on the apply→Ready latency path, so poll often.
const readyPoll = time.Millisecond

// WaitReady blocks until the agent in dir serves its socket, the agent's main command
// has already exited (an error carrying the exit code), or ctx is done.
// The caller must have removed stale state first (WriteConfig does).
func WaitReady(ctx context.Context, dir string) error {
	ready := filepath.Join(dir, ReadyFile)
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		if code, ok, _ := ReadExitCode(dir); ok {
			return fmt.Errorf("agent in %s: main command exited with code %d before the agent was ready", dir, code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent in %s not ready: %w", dir, ctx.Err())
		case <-t.C:
		}
	}
}
