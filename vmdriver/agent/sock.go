package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// maxSunPath is the longest path a sockaddr_un holds with its NUL terminator.
const maxSunPath = 107

// shortSocketPath returns an address for path that fits in sockaddr_un, for listen. Sandbox
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

// DialSocket connects to the agent socket at path. The socket lives in a
// directory the sandbox can write, so it is opened with O_PATH|O_NOFOLLOW,
// checked to be a socket and connected through that descriptor: a symlink
// planted (or swapped in at any moment) never redirects the host to another
// socket, and paths of any length work. An agent that is not listening yet
// (no socket, or refused) is waited for until ctx ends: Ready means the sandbox
// started, and its agent may still be a few milliseconds away.
func DialSocket(ctx context.Context, path string) (net.Conn, error) {
	for {
		conn, err := dialNoFollow(ctx, path)
		if err == nil || !(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent not listening on %s: %w", path, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func dialNoFollow(ctx context.Context, path string) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s is not a socket; refusing to use it", path)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", fd))
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
