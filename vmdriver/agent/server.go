package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Algorithms are pinned to the cheapest strong ones: the handshake is on the path of
// every exec. curve25519 key exchange, an ed25519 host key, AES-GCM (hardware
// accelerated for large outputs) with ChaCha20-Poly1305 as fallback.
var (
	kexAlgos     = []string{ssh.KeyExchangeCurve25519}
	cipherAlgos  = []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305}
	hostKeyAlgos = []string{ssh.KeyAlgoED25519}
)

// outputIdle is how long output is still drained after a process exits while some
// other process (a background child) keeps the pipe or terminal open.
const outputIdle = 100 * time.Millisecond

// execPayload is the command string of an SSH "exec" request: JSON, so argv is
// passed exactly with no shell in between.
type execPayload struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"` // "uid[:gid]" or "name[:group]"; default Config UID/GID
	// Copy, instead of Argv, makes the session a file copy (see copy.go).
	Copy *copyPayload `json:"copy,omitempty"`
}

// Server serves exec sessions over SSH. There is no client authentication: the
// socket is reachable only by host root and by root inside the sandbox, which can
// run anything there anyway. The host key is generated per start and never checked.
type Server struct {
	cfg  Config
	conf *ssh.ServerConfig
	// signalMain passes a signal to the main command (see SignalMain);
	// nil where the server runs none.
	signalMain func(syscall.Signal)
}

// NewServer returns a server running exec'd commands with cfg's environment,
// working directory and user as defaults.
func NewServer(cfg Config) (*Server, error) {
	cfg.setDefaults()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, err
	}
	conf := &ssh.ServerConfig{
		NoClientAuth:  true,
		ServerVersion: "SSH-2.0-msb-agent",
		Config:        ssh.Config{KeyExchanges: kexAlgos, Ciphers: cipherAlgos},
	}
	conf.AddHostKey(signer)
	startReaper()
	return &Server{cfg: cfg, conf: conf}, nil
}

// Serve accepts connections until l is closed.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go s.serveConn(c)
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a stuck handshake must not pin a goroutine
	sconn, chans, reqs, err := ssh.NewServerConn(c, s.conf)
	if err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	defer sconn.Close()
	go s.globalRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() == "direct-tcpip" {
			go serveForward(nc) // port-forward, see forward.go
			continue
		}
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only session channels are served")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go (&session{srv: s, ch: ch}).serve(creqs)
	}
}

// session is one SSH session channel: at most one exec.
type session struct {
	srv *Server
	ch  ssh.Channel

	mu         sync.Mutex
	env        []string
	tty        bool
	term       string
	rows, cols uint16
	master     *os.File // pty master in tty mode, once started
	pid        int      // once started
	exited     chan struct{}
	started    bool
	failed     error         // start error to report after the reply to "exec"
	replied    chan struct{} // closed once "exec" is answered: only then may the channel close
}

func (s *session) serve(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok := s.handle(req)
		if req.WantReply {
			req.Reply(ok, nil)
		}
		if req.Type == "exec" && ok {
			close(s.replied)
		}
		// A start failure is reported only now: closing the channel before the reply
		// to "exec" would make the client see EOF instead of an exit status.
		if s.failed != nil {
			s.fail(s.failed)
			s.failed = nil
		}
	}
	// The client went away. An exec'd process must not outlive its session
	// unnoticed, so kill it (its process group, as a hangup would).
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid > 0 {
		select {
		case <-s.exited:
		default:
			syscall.Kill(-s.pid, syscall.SIGKILL)
		}
	}
}

func (s *session) handle(req *ssh.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Type {
	case "env":
		var m struct{ Name, Value string }
		if ssh.Unmarshal(req.Payload, &m) != nil {
			return false
		}
		s.env = append(s.env, m.Name+"="+m.Value)
		return true
	case "pty-req":
		var m struct {
			Term                 string
			Cols, Rows, WPx, HPx uint32
			Modes                string
		}
		if s.started || ssh.Unmarshal(req.Payload, &m) != nil {
			return false
		}
		s.tty, s.term, s.rows, s.cols = true, m.Term, uint16(m.Rows), uint16(m.Cols)
		return true
	case "window-change":
		var m struct{ Cols, Rows, WPx, HPx uint32 }
		if ssh.Unmarshal(req.Payload, &m) != nil {
			return false
		}
		s.rows, s.cols = uint16(m.Rows), uint16(m.Cols)
		if s.master != nil {
			setWinsize(s.master, s.rows, s.cols)
		}
		return true
	case "signal":
		var m struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &m) != nil {
			return false
		}
		sig := signalNum(m.Signal)
		if sig == 0 || s.pid == 0 {
			return false
		}
		select {
		case <-s.exited:
			return false
		default:
		}
		if s.master != nil {
			if pg := foregroundPgrp(s.master); pg > 0 {
				return syscall.Kill(-pg, sig) == nil
			}
			return syscall.Kill(-s.pid, sig) == nil
		}
		return syscall.Kill(s.pid, sig) == nil
	case "exec":
		var m struct{ Command string }
		if s.started || ssh.Unmarshal(req.Payload, &m) != nil {
			return false
		}
		var p execPayload
		if err := json.Unmarshal([]byte(m.Command), &p); err != nil || (len(p.Argv) == 0) == (p.Copy == nil) {
			return false
		}
		s.started = true
		s.exited = make(chan struct{})
		s.replied = make(chan struct{})
		if p.Copy != nil {
			if s.tty {
				return false
			}
			go s.runCopy(*p.Copy)
			return true
		}
		if err := s.start(p); err != nil {
			s.failed = err
		}
		return true
	default:
		// "shell" has no meaning here; file copy is an "exec" naming a copy.
		return false
	}
}

// fail reports a command that could not start, the way a shell would.
func (s *session) fail(err error) {
	ee := startError("", err)
	w := s.ch.Stderr()
	if s.tty {
		w = s.ch
	}
	fmt.Fprintf(w, "msb-agent: %v\n", err)
	close(s.exited)
	s.finish(ee.code, 0)
}

// finish sends the exit status and closes the channel.
func (s *session) finish(code int, sig syscall.Signal) {
	<-s.replied
	if name := signalName(sig); sig != 0 && name != "" {
		s.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: name}))
	} else {
		s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	}
	s.ch.CloseWrite()
	s.ch.Close()
}

// start runs the exec'd process. Called with s.mu held.
func (s *session) start(p execPayload) error {
	cfg := s.srv.cfg
	env := mergeEnv(cfg.Env, s.env, p.Env)
	if s.tty {
		if _, ok := envValue(env, "TERM"); !ok {
			term := s.term
			if term == "" {
				term = "xterm"
			}
			env = append(env, "TERM="+term)
		}
	}
	dir := p.WorkingDir
	if dir == "" {
		dir = cfg.WorkingDir
	}
	uid, gid := cfg.UID, cfg.GID
	if p.User != "" {
		var err error
		if uid, gid, err = lookupUser(p.User, gid); err != nil {
			return &execError{name: p.Argv[0], code: 126, err: err}
		}
	}
	path, err := lookPath(p.Argv[0], env)
	if err != nil {
		return err
	}
	attr := &syscall.ProcAttr{
		Dir: dir,
		Env: env,
		// Own session: signals and job control of the exec'd tree stay separate from
		// the agent and the main command.
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: credential(uid, gid)},
	}

	var childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	if s.tty {
		master, slave, err := openPty()
		if err != nil {
			return &execError{name: p.Argv[0], code: 126, err: fmt.Errorf("allocate pty: %w", err)}
		}
		if s.rows > 0 && s.cols > 0 {
			setWinsize(master, s.rows, s.cols)
		}
		attr.Files = []uintptr{slave.Fd(), slave.Fd(), slave.Fd()}
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
		pid, wait, err := procs.spawn(path, p.Argv, attr)
		slave.Close()
		if err != nil {
			master.Close()
			return startError(p.Argv[0], err)
		}
		s.pid, s.master = pid, master
		go func() { io.Copy(master, s.ch) }() // stdin EOF has no meaning on a terminal
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); pump(s.ch, master, s.exited) }()
		go s.wait(wait, &wg, master)
		return nil
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll([]*os.File{stdinR, stdinW})
		return err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll([]*os.File{stdinR, stdinW, stdoutR, stdoutW})
		return err
	}
	childEnds = []*os.File{stdinR, stdoutW, stderrW}
	attr.Files = []uintptr{stdinR.Fd(), stdoutW.Fd(), stderrW.Fd()}
	pid, wait, err := procs.spawn(path, p.Argv, attr)
	closeAll(childEnds)
	if err != nil {
		closeAll([]*os.File{stdinW, stdoutR, stderrR})
		return startError(p.Argv[0], err)
	}
	s.pid = pid
	go func() {
		io.Copy(stdinW, s.ch)
		stdinW.Close() // client EOF → process stdin EOF
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pump(s.ch, stdoutR, s.exited); stdoutR.Close() }()
	go func() { defer wg.Done(); pump(s.ch.Stderr(), stderrR, s.exited); stderrR.Close() }()
	go s.wait(wait, &wg, nil)
	return nil
}

// wait waits for the exit status, lets the output drain, then reports the exit.
func (s *session) wait(wait <-chan syscall.WaitStatus, wg *sync.WaitGroup, master *os.File) {
	ws := <-wait
	s.mu.Lock()
	close(s.exited)
	s.mu.Unlock()
	wg.Wait()
	if master != nil {
		s.mu.Lock()
		s.master = nil
		s.mu.Unlock()
		master.Close()
	}
	var sig syscall.Signal
	if ws.Signaled() {
		sig = ws.Signal()
	}
	s.finish(exitCode(ws), sig)
}

// pump copies r to w until EOF. Once exited is closed it stops after outputIdle
// without data, so a background process holding the pipe or terminal open does not
// keep the session (or the agent's exit) hanging. r must be pollable (a pipe or a
// non-blocking pty master) for the deadline to work.
func pump(w io.Writer, r *os.File, exited <-chan struct{}) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-exited:
			r.SetReadDeadline(time.Now().Add(outputIdle))
		case <-stop:
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				// The reader is gone; keep draining so the writer never blocks.
				w = io.Discard
			}
			select {
			case <-exited:
				r.SetReadDeadline(time.Now().Add(outputIdle))
			default:
			}
		}
		if err != nil {
			// EOF, EIO (pty with no slave left) or the idle deadline.
			return
		}
	}
}
