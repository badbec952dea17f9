package apiserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver/agent"
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
	agentConn, err := agent.DialSocket(ctx, path)
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
