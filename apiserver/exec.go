package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/vmdriver/agent"
)

// agentPool keeps one SSH connection per agent socket, so an exec costs a
// session on a warm connection rather than a handshake. A connection is
// dropped when it closes (its agent ended) or fails to open a session.
type agentPool struct {
	mu    sync.Mutex
	conns map[string]*agent.Client
}

// get returns the kept connection to the agent at path, or dials one
// (fresh=true) through agent.Dial's checks.
func (p *agentPool) get(ctx context.Context, path string) (c *agent.Client, fresh bool, err error) {
	p.mu.Lock()
	c = p.conns[path]
	p.mu.Unlock()
	if c != nil {
		return c, false, nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err = agent.Dial(dctx, path)
	if err != nil {
		return nil, false, err
	}
	p.mu.Lock()
	if old := p.conns[path]; old != nil {
		// Another exec dialled meanwhile: keep one.
		p.mu.Unlock()
		c.Close()
		return old, false, nil
	}
	if p.conns == nil {
		p.conns = map[string]*agent.Client{}
	}
	p.conns[path] = c
	p.mu.Unlock()
	go func() {
		c.Wait()
		p.drop(path, c)
	}()
	return c, true, nil
}

// drop forgets and closes c if it is the connection kept for path.
func (p *agentPool) drop(path string, c *agent.Client) {
	p.mu.Lock()
	if p.conns[path] == c {
		delete(p.conns, path)
	}
	p.mu.Unlock()
	c.Close()
}

// maxSunPath is the longest path a sockaddr_un holds (108 with the NUL).
const maxSunPath = 107

// execParams reads the command of an exec request from its query (see
// client.ExecProtocol).
func execParams(q url.Values) (agent.ExecRequest, bool, error) {
	var req agent.ExecRequest
	req.Argv = q["command"]
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return req, false, badRequest("exec: no command (give command=ARG, repeated)")
	}
	req.Env = q["env"]
	for _, e := range req.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return req, false, badRequest("exec: env %q: want NAME=VALUE", e)
		}
	}
	req.WorkingDir = q.Get("workingDir")
	flag := func(name string) (bool, error) {
		switch v := q.Get(name); v {
		case "", "false", "0":
			return false, nil
		case "true", "1":
			return true, nil
		default:
			return false, badRequest("exec: %s=%q: want true or false", name, v)
		}
	}
	var err error
	if req.TTY, err = flag("tty"); err != nil {
		return req, false, err
	}
	stdin, err := flag("stdin")
	if err != nil {
		return req, false, err
	}
	if req.TTY {
		req.Term = q.Get("term")
		for _, d := range []struct {
			name string
			p    *uint16
		}{{"rows", &req.Rows}, {"cols", &req.Cols}} {
			if v := q.Get(d.name); v != "" {
				n, err := strconv.ParseUint(v, 10, 16)
				if err != nil {
					return req, false, badRequest("exec: %s=%q: want 0..65535", d.name, v)
				}
				*d.p = uint16(n)
			}
		}
	}
	return req, stdin, nil
}

// exec runs a command in the sandbox: msbd speaks SSH to the sandbox's agent
// and relays the command's streams, window size and signals to the client
// as frames (client.ExecProtocol), ending with the exit code.
func (s *server) exec(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), client.ExecProtocol) {
		return badRequest("exec needs Connection: Upgrade and Upgrade: %s", client.ExecProtocol)
	}
	req, wantStdin, err := execParams(r.URL.Query())
	if err != nil {
		return err
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
	ac, fresh, err := s.agents.get(r.Context(), path)
	if err != nil {
		return &apiError{code: http.StatusServiceUnavailable, reason: "ServiceUnavailable",
			msg: fmt.Sprintf("cannot reach the agent of sandbox %q in namespace %q: %v", name, ns, err)}
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("exec: hijack: %w", err)
	}
	defer conn.Close()
	if rec, ok := w.(*recorder); ok {
		rec.status = http.StatusSwitchingProtocols
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + client.ExecProtocol + "\r\n\r\n"); err != nil {
		return nil
	}
	if err := brw.Flush(); err != nil {
		return nil
	}

	// The client going away ends the command: ctx closes its session.
	ctx, cancelExec := context.WithCancel(context.Background())
	defer cancelExec()
	fw := client.NewFrameWriter(conn)
	req.Stdout = fw.Stream(client.StreamStdout)
	req.Stderr = fw.Stream(client.StreamStderr)
	var stdinW *io.PipeWriter
	if wantStdin {
		var pr *io.PipeReader
		pr, stdinW = io.Pipe()
		req.Stdin = pr
		defer stdinW.Close() // unblocks the session's input copy
	}
	resize := make(chan agent.WindowSize, 4)
	signals := make(chan syscall.Signal, 4)
	req.Resize, req.Signals = resize, signals
	go func() {
		defer cancelExec()
		var buf []byte
		for {
			stream, p, err := client.ReadFrame(brw.Reader, &buf)
			if err != nil {
				if stdinW != nil {
					stdinW.CloseWithError(io.ErrUnexpectedEOF)
				}
				return
			}
			switch stream {
			case client.StreamStdin:
				if stdinW == nil {
					continue
				}
				if len(p) == 0 {
					stdinW.Close()
					continue
				}
				if _, err := stdinW.Write(p); err != nil {
					// The command stopped reading: drop further input.
					continue
				}
			case client.StreamResize:
				var ws client.WindowSize
				if json.Unmarshal(p, &ws) == nil {
					select {
					case resize <- agent.WindowSize{Rows: ws.Rows, Cols: ws.Cols}:
					default: // a newer size follows
					}
				}
			case client.StreamSignal:
				if n, err := strconv.Atoi(string(p)); err == nil && n > 0 && n < 65 {
					select {
					case signals <- syscall.Signal(n):
					case <-ctx.Done():
						return
					}
				}
			default:
				return // protocol error: end the exec
			}
		}
	}()
	s.log.Debug("exec", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name), "argv0", req.Argv[0])
	code, err := ac.Exec(ctx, req)
	if errors.Is(err, agent.ErrNoSession) && !fresh {
		// The kept connection went stale (the agent restarted): nothing
		// ran; once more on a new one.
		s.agents.drop(path, ac)
		if ac, _, err = s.agents.get(ctx, path); err == nil {
			code, err = ac.Exec(ctx, req)
		}
	}
	res := client.ExecResult{ExitCode: code}
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	fw.WriteFrame(client.StreamExit, b)
	return nil
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
