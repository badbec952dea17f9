package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/apis/v1alpha1"
)

// execProtocol is the Upgrade token of the exec endpoint: after 101 Switching
// Protocols the connection carries the agent's SSH protocol, byte for byte.
const execProtocol = "msb-agent-ssh"

// maxSunPath is the longest path a sockaddr_un holds (108 with the NUL).
const maxSunPath = 107

// exec upgrades the connection and splices it to the sandbox's agent socket.
func (s *server) exec(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), execProtocol) {
		return badRequest("exec needs Connection: Upgrade and Upgrade: %s", execProtocol)
	}
	var sb v1alpha1.Sandbox
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, &sb); err != nil {
		return storeError(err, "sandboxes", ns, name)
	}
	if s.rt == nil {
		return &apiError{code: http.StatusNotImplemented, reason: "NotImplemented", msg: "this server has no sandbox runtime"}
	}
	path, err := s.rt.AgentSocket(&sb)
	if err != nil {
		return badRequest("cannot exec in sandbox %q in namespace %q: %v", name, ns, err)
	}
	// Connect before answering 101 so a failure is still an HTTP error.
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	agentConn, err := dialAgent(ctx, path)
	cancel()
	if err != nil {
		return &apiError{code: http.StatusServiceUnavailable, reason: "ServiceUnavailable",
			msg: fmt.Sprintf("cannot reach the agent of sandbox %q in namespace %q: %v", name, ns, err)}
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		agentConn.Close()
		return fmt.Errorf("exec: hijack: %w", err)
	}
	if rec, ok := w.(*recorder); ok {
		rec.status = http.StatusSwitchingProtocols
	}
	s.log.Debug("exec: splicing", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name))
	_ = conn.SetDeadline(time.Time{})
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + execProtocol + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	// Bytes the client sent after its request are already in the buffer.
	if err == nil && brw.Reader.Buffered() > 0 {
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		_, err = agentConn.Write(b)
	}
	if err != nil {
		conn.Close()
		agentConn.Close()
		return nil
	}
	splice(conn, agentConn)
	return nil
}

// splice copies both ways until both directions are done, passing each EOF on
// as a half-close, then closes both connections.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			// An error (or no half-close): tear both down so the other copy ends too.
			a.Close()
			b.Close()
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// headerHasToken reports whether the comma-separated header name contains token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// dialAgent connects to a sandbox's agent. Ready means the sandbox started,
// and its agent may still be a few milliseconds from listening: a missing or
// refusing socket is retried until ctx ends. The socket lives in a directory
// the sandbox can write, so it is opened with O_PATH|O_NOFOLLOW, checked to be
// a socket and connected through that descriptor: a symlink planted (or
// swapped in at any moment) never redirects msbd to another host socket.
func dialAgent(ctx context.Context, path string) (net.Conn, error) {
	for {
		conn, err := dialSocketNoFollow(ctx, path)
		if err == nil || !(errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
			return conn, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent not listening on %s: %w", path, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func dialSocketNoFollow(ctx context.Context, path string) (net.Conn, error) {
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
