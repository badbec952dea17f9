package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxSunPath is the longest path a sockaddr_un holds with its NUL terminator.
const maxSunPath = 107

// shortSocketPath returns an address for path that fits in sockaddr_un. Sandbox
// directories live deep under the state directory and easily pass 107 bytes, so a
// long path is reached through the parent directory opened as /proc/self/fd/N.
// The returned func closes that descriptor; call it once bind or connect is done.
func shortSocketPath(path string) (string, func(), error) {
	if len(path) <= maxSunPath {
		return path, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("socket %s: %w", path, err)
	}
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path))
	if len(addr) > maxSunPath {
		unix.Close(fd)
		return "", nil, fmt.Errorf("socket %s: file name too long for a unix socket", path)
	}
	return addr, func() { unix.Close(fd) }, nil
}

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	addr, done, err := shortSocketPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	var d net.Dialer
	return d.DialContext(ctx, "unix", addr)
}

// listenUnix listens on path (any length), mode 0600: only host root and the
// sandbox's own root may talk to the agent. The socket file is not removed on Close.
func listenUnix(path string) (net.Listener, error) {
	addr, done, err := shortSocketPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	unix.Unlink(path)
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	// Go would unlink the /proc/self/fd address, which is meaningless once done runs.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := unix.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
