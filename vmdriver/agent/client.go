package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Client is a connection to one agent. It is safe for concurrent Exec calls, each on
// its own SSH session.
type Client struct {
	c *ssh.Client
	// unresponsive is set once a call timed out and the connection was
	// closed for it: errors of calls it cut short then say so.
	unresponsive atomic.Bool
}

// WindowSize is a terminal size in character cells.
type WindowSize struct {
	Rows, Cols uint16
}

// ExecRequest describes one command to run in the sandbox.
type ExecRequest struct {
	Argv       []string // exact argv, no shell; Argv[0] is looked up in the PATH of the env
	Env        []string // KEY=VALUE, overriding Config.Env
	WorkingDir string   // default Config.WorkingDir
	User       string   // "uid[:gid]" or "name[:group]"; default Config.UID/GID

	TTY        bool // run on a pty; output then all comes on Stdout
	Term       string
	Rows, Cols uint16

	Stdin          io.Reader // nil = no stdin (EOF immediately)
	Stdout, Stderr io.Writer // nil = discard; with TTY, Stderr is unused

	Resize  <-chan WindowSize     // optional, TTY only
	Signals <-chan syscall.Signal // optional: forwarded to the process (its foreground group with TTY)

	// Copy, instead of Argv, makes this a file copy served by the agent
	// itself (see Client.Copy); the exit code is 0 or 1.
	Copy *CopyRequest
}

// Dial connects to the agent socket at socketPath (see DialSocket) and completes
// the SSH handshake.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	conn, err := DialSocket(ctx, socketPath)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", socketPath, err)
	}
	// The socket accepted: from here a frozen agent would hang the
	// handshake, so it has CallTimeout to answer.
	hctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	c, err := newClient(hctx, conn, socketPath)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = unresponsive("the handshake")
		}
		return nil, fmt.Errorf("agent %s: %w", socketPath, err)
	}
	return c, nil
}

// NewClient speaks the agent protocol over an already connected conn — for
// example msbd's API connection upgraded and spliced to the agent socket, which
// is how msbctl execs. It owns conn from then on.
func NewClient(conn net.Conn) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return newClient(ctx, conn, "msb-agent")
}

func newClient(ctx context.Context, conn net.Conn, addr string) (*Client, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	conf := &ssh.ClientConfig{
		User: "root",
		// The host key is not checked: the agent generates a fresh one per start, and
		// reaching this socket at all (host root only) is the authentication.
		HostKeyCallback:   ssh.InsecureIgnoreHostKey(),
		HostKeyAlgorithms: hostKeyAlgos,
		ClientVersion:     "SSH-2.0-msb",
		Config:            ssh.Config{KeyExchanges: kexAlgos, Ciphers: cipherAlgos},
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, conf)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		conn.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return &Client{c: ssh.NewClient(sc, chans, reqs)}, nil
}

// Close closes the connection; running Execs fail and their processes are killed.
func (c *Client) Close() error { return c.c.Close() }

// Wait blocks until the connection is closed (by Close, or because the agent
// went away): a holder of long-lived Clients learns when to drop one.
func (c *Client) Wait() error { return c.c.Wait() }

// ErrNoSession wraps Exec's error when the connection could not even open a
// session: nothing ran, so the Exec may be retried on a fresh connection.
var ErrNoSession = errors.New("agent connection cannot open a session")

// Exec runs req in the sandbox and returns its exit code: 128+signal if it was killed
// by a signal, 127 if Argv[0] was not found, 126 if it could not be run. err is set
// only when the exit code could not be learned (connection lost, ctx done); when ctx
// is done the session is closed, which kills the process.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (exitCode int, err error) {
	st, err := c.Run(ctx, req)
	return st.Code, err
}

// ExitStatus is how an exec'd command ended.
type ExitStatus struct {
	// Code is the shell-style exit code: 128+signal when killed; -1 unknown.
	Code int
	// Signal is the signal that killed the command, 0 if it exited by
	// itself: "killed by SIGKILL" and "exit 137" share Code 137.
	Signal syscall.Signal
}

// Run is Exec, telling also which signal (if any) ended the command.
func (c *Client) Run(ctx context.Context, req ExecRequest) (ExitStatus, error) {
	code, sig, err := c.run(ctx, req)
	return ExitStatus{Code: code, Signal: sig}, err
}

func (c *Client) run(ctx context.Context, req ExecRequest) (exitCode int, sig syscall.Signal, err error) {
	p := execPayload{Argv: req.Argv, Env: req.Env, WorkingDir: req.WorkingDir, User: req.User}
	if req.Copy != nil {
		cp, err := req.Copy.payload()
		if err != nil {
			return -1, 0, err
		}
		p = execPayload{Copy: cp}
		req.TTY = false
	} else if len(req.Argv) == 0 {
		return -1, 0, errors.New("exec: empty argv")
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return -1, 0, err
	}
	// Opening a session waits for the agent; a frozen one must not hold the
	// caller past ctx.
	type opened struct {
		sess *ssh.Session
		err  error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := c.c.NewSession()
		ch <- opened{s, err}
	}()
	// Opening the session, the pty and starting the command each wait on
	// the agent: together they get CallTimeout, after which the connection
	// is closed (every other call on it would hang as well).
	setup := time.AfterFunc(CallTimeout, func() {
		c.unresponsive.Store(true)
		c.c.Close()
	})
	defer setup.Stop()
	var sess *ssh.Session
	select {
	case o := <-ch:
		if o.err != nil {
			if c.unresponsive.Load() {
				return -1, 0, unresponsive("a session request")
			}
			return -1, 0, fmt.Errorf("exec: %w: %w", ErrNoSession, o.err)
		}
		sess = o.sess
	case <-ctx.Done():
		go func() {
			if o := <-ch; o.sess != nil {
				o.sess.Close()
			}
		}()
		return -1, 0, ctx.Err()
	}
	defer sess.Close()
	if req.TTY {
		term := req.Term
		if term == "" {
			term = "xterm"
		}
		if err := sess.RequestPty(term, int(req.Rows), int(req.Cols), ssh.TerminalModes{}); err != nil {
			if c.unresponsive.Load() {
				return -1, 0, unresponsive("a pty request")
			}
			return -1, 0, fmt.Errorf("exec: pty: %w", err)
		}
	}
	sess.Stdin, sess.Stdout, sess.Stderr = req.Stdin, req.Stdout, req.Stderr
	if err := sess.Start(string(payload)); err != nil {
		if c.unresponsive.Load() {
			return -1, 0, unresponsive("an exec request")
		}
		if req.Copy != nil {
			return -1, 0, fmt.Errorf("copy: %w", err)
		}
		return -1, 0, fmt.Errorf("exec %q: %w", req.Argv[0], err)
	}
	setup.Stop()
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	// A command may run for hours without a byte of output: while it
	// runs, the agent must keep answering pings.
	dead := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go c.watch(wctx, dead)
	for {
		select {
		case err := <-done:
			code, sig, err := waitResult(err)
			if err != nil && c.unresponsive.Load() {
				err = unresponsive("a ping")
			}
			return code, sig, err
		case <-dead:
			sess.Close()
			return -1, 0, unresponsive("a ping")
		case ws, ok := <-req.Resize:
			if !ok {
				req.Resize = nil
				continue
			}
			sess.WindowChange(int(ws.Rows), int(ws.Cols))
		case sig, ok := <-req.Signals:
			if !ok {
				req.Signals = nil
				continue
			}
			if name := signalName(sig); name != "" {
				sess.Signal(ssh.Signal(name))
			}
		case <-ctx.Done():
			sess.Close()
			return -1, 0, ctx.Err()
		}
	}
}

func waitResult(err error) (int, syscall.Signal, error) {
	if err == nil {
		return 0, 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" {
			sig := signalNum(ee.Signal())
			return 128 + int(sig), sig, nil
		}
		return ee.ExitStatus(), 0, nil
	}
	return -1, 0, fmt.Errorf("exec: %w", err)
}
