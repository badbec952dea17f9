package apiserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"msb.dev/msb/apis/v1alpha1"
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

// sendNewest puts ws on ch, dropping the oldest pending size if ch is full:
// only the latest size matters.
func sendNewest(ch chan agent.WindowSize, ws agent.WindowSize) {
	for {
		select {
		case ch <- ws:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// stdinQueue holds the client's stdin between the frame reader and the
// command: the reader never waits on the command, and the queue never holds
// more than the client was granted.
type stdinQueue struct {
	mu      sync.Mutex
	chunks  [][]byte
	queued  int
	closed  bool
	pending chan struct{} // a chunk or the close arrived
}

func newStdinQueue() *stdinQueue { return &stdinQueue{pending: make(chan struct{}, 1)} }

// push queues a copy of p; false if that would exceed the window.
func (q *stdinQueue) push(p []byte) bool {
	q.mu.Lock()
	if q.closed || q.queued+len(p) > v1alpha1.StdinWindow {
		q.mu.Unlock()
		return false
	}
	q.chunks = append(q.chunks, append([]byte(nil), p...))
	q.queued += len(p)
	q.mu.Unlock()
	q.notify()
	return true
}

// close marks the end of input.
func (q *stdinQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.notify()
}

func (q *stdinQueue) notify() {
	select {
	case q.pending <- struct{}{}:
	default:
	}
}

// feed writes the queued input to w as the command takes it, granting the
// client each byte again once written; it closes w at the end of input.
func (q *stdinQueue) feed(ctx context.Context, w *io.PipeWriter, fw *v1alpha1.FrameWriter) {
	for {
		q.mu.Lock()
		chunks, closed := q.chunks, q.closed
		q.chunks = nil
		q.mu.Unlock()
		for _, c := range chunks {
			if _, err := w.Write(c); err != nil {
				return // the command or the exec is gone
			}
			q.mu.Lock()
			q.queued -= len(c)
			q.mu.Unlock()
			var grant [4]byte
			binary.BigEndian.PutUint32(grant[:], uint32(len(c)))
			if fw.WriteFrame(v1alpha1.StreamCredit, grant[:]) != nil {
				return
			}
		}
		if closed && len(chunks) == 0 {
			w.Close()
			return
		}
		if len(chunks) > 0 {
			continue // more may have come meanwhile
		}
		select {
		case <-q.pending:
		case <-ctx.Done():
			return
		}
	}
}

// maxSunPath is the longest path a sockaddr_un holds (108 with the NUL).
const maxSunPath = 107

// execParams reads the command of an exec request from its query (see
// v1alpha1.ExecProtocol).
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
// as frames (v1alpha1.ExecProtocol), ending with the exit code.
func (s *server) exec(w http.ResponseWriter, r *http.Request) error {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), v1alpha1.ExecProtocol) {
		return badRequest("exec needs Connection: Upgrade and Upgrade: %s", v1alpha1.ExecProtocol)
	}
	req, wantStdin, err := execParams(r.URL.Query())
	if err != nil {
		return err
	}
	return s.stream(w, r, req, wantStdin)
}

// stream runs req (a command or a copy) on the sandbox's agent and relays
// it over the exec stream protocol.
func (s *server) stream(w http.ResponseWriter, r *http.Request, req agent.ExecRequest, wantStdin bool) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	// Connect before answering 101 so a failure is still an HTTP error.
	sb, path, ac, fresh, err := s.sandboxAgent(r.Context(), ns, name, "exec in")
	if err != nil {
		return err
	}
	conn, brw, err := upgrade(w, v1alpha1.ExecProtocol)
	if err != nil {
		return err
	}
	if conn == nil {
		return nil
	}
	defer conn.Close()

	// The client going away ends the command: ctx closes its session.
	ctx, cancelExec := context.WithCancel(context.Background())
	defer cancelExec()
	fw := v1alpha1.NewFrameWriter(conn)
	req.Stdout = fw.Stream(v1alpha1.StreamStdout)
	req.Stderr = fw.Stream(v1alpha1.StreamStderr)
	var in *stdinQueue
	if wantStdin {
		pr, pw := io.Pipe()
		req.Stdin = pr
		in = newStdinQueue()
		defer pw.Close() // unblocks the feeder and the session's input copy
		go in.feed(ctx, pw, fw)
		var grant [4]byte
		binary.BigEndian.PutUint32(grant[:], v1alpha1.StdinWindow)
		fw.WriteFrame(v1alpha1.StreamCredit, grant[:])
	}
	resize := make(chan agent.WindowSize, 4)
	signals := make(chan syscall.Signal, 4)
	req.Resize, req.Signals = resize, signals
	var protoErr atomic.Value // string: why the client's stream was refused
	go func() {
		// Never blocks but on the client: stdin is queued within its grant,
		// so signals, resizes and a hang-up are always seen.
		defer cancelExec()
		var buf []byte
		for {
			stream, p, err := v1alpha1.ReadFrame(brw.Reader, &buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					protoErr.Store(err.Error())
				}
				return
			}
			switch stream {
			case v1alpha1.StreamStdin:
				if in == nil {
					continue
				}
				if len(p) == 0 {
					in.close()
				} else if !in.push(p) {
					protoErr.Store(fmt.Sprintf("stdin beyond the %d bytes granted", v1alpha1.StdinWindow))
					return
				}
			case v1alpha1.StreamResize:
				var ws v1alpha1.WindowSize
				if json.Unmarshal(p, &ws) == nil {
					sendNewest(resize, agent.WindowSize{Rows: ws.Rows, Cols: ws.Cols})
				}
			case v1alpha1.StreamSignal:
				if n, err := strconv.Atoi(string(p)); err == nil && n > 0 && n < 65 {
					select {
					case signals <- syscall.Signal(n):
					default: // four pending already: the command is not reacting
					}
				}
			default:
				protoErr.Store(fmt.Sprintf("unknown stream %d", stream))
				return
			}
		}
	}()
	if req.Copy != nil {
		s.log.Debug("copy", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name), "direction", req.Copy.Direction)
	} else {
		s.log.Debug("exec", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name), "argv0", req.Argv[0])
	}
	oomBefore, oomKnown := s.oomKills(sb)
	st, err := ac.Run(ctx, req)
	if errors.Is(err, agent.ErrNoSession) && !fresh {
		// The kept connection went stale (the agent restarted): nothing
		// ran; once more on a new one.
		s.agents.drop(path, ac)
		if ac, _, err = s.agents.get(ctx, path); err == nil {
			st, err = ac.Run(ctx, req)
		}
	}
	res := v1alpha1.ExecResult{ExitCode: st.Code}
	if msg, _ := protoErr.Load().(string); msg != "" {
		res.Error = "exec stream: " + msg
	} else if err != nil {
		res.Error = err.Error()
		if errors.Is(err, agent.ErrUnresponsive) {
			res.Reason = agent.ReasonUnresponsive
			res.Error = fmt.Sprintf("sandbox %q in namespace %q: %v", name, ns, err)
			s.agentUnresponsive(sb)
		}
	} else if oomKnown && s.execOOMKilled(sb, req.Argv, st, oomBefore) {
		res.Reason = v1alpha1.ExecReasonOOMKilled
	}
	b, _ := json.Marshal(res)
	fw.WriteFrame(v1alpha1.StreamExit, b)
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

// sandboxAgent reads sandbox ns/name and connects to its agent. Failures are
// API errors naming the sandbox and what was tried (verb: "exec in",
// "forward to"); an agent that does not answer in time also marks the
// sandbox AgentUnresponsive.
func (s *server) sandboxAgent(ctx context.Context, ns, name, verb string) (sb *v1alpha1.Sandbox, path string, ac *agent.Client, fresh bool, err error) {
	sb = new(v1alpha1.Sandbox)
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, sb); err != nil {
		return nil, "", nil, false, storeError(err, "sandboxes", ns, name)
	}
	if s.rt == nil {
		return nil, "", nil, false, &apiError{code: http.StatusNotImplemented, reason: "NotImplemented", msg: "this server has no sandbox runtime"}
	}
	if path, err = s.rt.AgentSocket(sb); err != nil {
		return nil, "", nil, false, badRequest("cannot %s sandbox %q in namespace %q: %v", verb, name, ns, err)
	}
	if ac, fresh, err = s.agents.get(ctx, path); err != nil {
		reason := "ServiceUnavailable"
		if errors.Is(err, agent.ErrUnresponsive) {
			reason = agent.ReasonUnresponsive
			s.agentUnresponsive(sb)
		}
		return nil, "", nil, false, &apiError{code: http.StatusServiceUnavailable, reason: reason,
			msg: fmt.Sprintf("cannot reach the agent of sandbox %q in namespace %q: %v", name, ns, err)}
	}
	return sb, path, ac, fresh, nil
}

// upgrade takes the connection over from net/http and answers 101 for
// protocol. A nil conn with a nil error means the client went away while
// being answered: there is nothing left to do.
func upgrade(w http.ResponseWriter, protocol string) (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: hijack: %w", protocol, err)
	}
	if rec, ok := w.(*recorder); ok {
		rec.status = http.StatusSwitchingProtocols
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + protocol + "\r\n\r\n"); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, nil, nil
	}
	return conn, brw, nil
}
