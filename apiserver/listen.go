package apiserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Listen opens the API's unix socket at path, mode 0600, creating its parent
// directory (mode 0700) if needed. A stale socket left by an msbd that died
// (the file exists but nothing accepts) is replaced; a live one is an error,
// because another msbd is serving it.
func Listen(path string) (net.Listener, error) {
	if len(path) > maxSunPath {
		return nil, fmt.Errorf("socket path %s is %d bytes long; unix sockets allow at most %d: choose a shorter path", path, len(path), maxSunPath)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
		// MkdirAll is subject to the umask; be exact.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another --socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another msbd is listening on %s", path)
		}
		// Nobody answers: a stale socket from a previous run.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The socket is born 0600: no window in which another user could connect
	// before the chmod. msbd calls Listen once, at start, before any other
	// goroutine creates files, so changing the process umask here is safe.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("restrict socket mode: %w", err)
	}
	return l, nil
}
