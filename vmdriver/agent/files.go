package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ReadExitCode returns the main command's exit code once the agent has written it.
// ok is false (and err nil) while the main command has not exited.
func ReadExitCode(dir string) (code int, ok bool, err error) {
	f, err := openSandboxFile(filepath.Join(dir, ExitCodeFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
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

// ReadExitSignal returns the signal that killed the main command, or 0 when it
// exited by itself (or has not ended). Like ReadExitCode it reads a file the
// sandbox can write: it says how the sandbox's own command ended, nothing more.
func ReadExitSignal(dir string) int {
	f, err := openSandboxFile(filepath.Join(dir, ExitSignalFile))
	if err != nil {
		return 0
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 || n > 64 {
		return 0
	}
	return n
}

func writeExitSignal(dir string, sig int) error {
	return writeFileAtomic(filepath.Join(dir, ExitSignalFile), []byte(strconv.Itoa(sig)+"\n"))
}

// openSandboxFile opens a file the sandbox can write (everything in the agent
// directory) for reading on the host, without letting the sandbox redirect
// the host: a symlink planted in its place is not followed, and anything but
// a regular file (a fifo that would block, a device) is refused.
func openSandboxFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: not a regular file; refusing to read it", path)
	}
	return os.NewFile(uintptr(fd), path), nil
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
