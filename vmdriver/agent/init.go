package agent

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExitAgentError is the exit code of the agent when it cannot run the sandbox at all
// (bad config, unusable directory). No exit-code file is written then, so the host
// can tell an agent failure from a main command that exited 125.
const ExitAgentError = 125

// terminateGrace is how long the remaining processes get between SIGTERM and SIGKILL
// once the main command has exited.
const terminateGrace = time.Second

// forwarded are the signals the agent passes on to the main command.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// RunInit does the agent's job as the sandbox's PID 1 and returns the exit code the
// process must exit with: it reads dir/config.json, serves dir/agent.sock, runs the
// main command with its output in dir/log, reaps every process, forwards signals,
// and when the main command ends writes dir/exit-code and stops everything else.
//
// Not being PID 1 is supported (tests, or a guest init that is not ours): the agent
// then becomes a child subreaper, so orphans are still reparented to it and reaped,
// and at exit it signals only its own descendants.
//
// seccompFD, when not negative, is a descriptor the host passed with the
// sandbox's compiled seccomp filter (see InstallSeccomp): it is installed
// before anything else, and the agent refuses to run without it.
func RunInit(dir string, seccompFD int) int { return RunInitListen(dir, seccompFD, Listen{}) }

// RunInitListen is RunInit serving where l says (a vsock port in a
// microVM) instead of dir/agent.sock.
func RunInitListen(dir string, seccompFD int, l Listen) int {
	fatal := func(format string, args ...any) int {
		msg := fmt.Sprintf("msb-agent: "+format+"\n", args...)
		os.Stderr.WriteString(msg)
		if f, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			f.WriteString(msg)
			f.Close()
		}
		return ExitAgentError
	}
	if err := hardenAgent(); err != nil {
		return fatal("%v", err)
	}
	if seccompFD >= 0 {
		if err := InstallSeccomp(seccompFD); err != nil {
			return fatal("%v", err)
		}
	}
	cfg, err := ReadConfig(dir)
	if err != nil {
		return fatal("%v", err)
	}
	pid1 := os.Getpid() == 1
	if l.VsockPort != 0 {
		guestLoopbackUp() // in a microVM nobody outside can do it
	}
	if pid1 {
		if cfg.Hostname != "" {
			if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
				fmt.Fprintf(os.Stderr, "msb-agent: set hostname: %v\n", err)
			}
		}
	} else if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fatal("become child subreaper: %v", err)
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, forwarded...)
	r := startReaper()
	if err := clearRunState(dir); err != nil {
		return fatal("%v", err)
	}
	lw, err := openLog(dir, cfg.LogMaxBytes)
	if err != nil {
		return fatal("open log: %v", err)
	}
	defer lw.Close()

	sock := filepath.Join(dir, SocketFile)
	ln, err := l.listen(sock)
	if err != nil {
		return fatal("listen: %v", err)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		return fatal("%v", err)
	}
	srv.signalMain = func(sig syscall.Signal) {
		select {
		case sigc <- sig:
		default: // as many signals already pending: one more changes nothing
		}
	}
	go srv.Serve(ln)
	if f, err := os.OpenFile(filepath.Join(dir, ReadyFile), os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	defer func() {
		ln.Close()
		os.Remove(filepath.Join(dir, ReadyFile))
		os.Remove(sock)
	}()

	code, sig := runMain(cfg, r, lw, sigc)
	if sig != 0 {
		if err := writeExitSignal(dir, int(sig)); err != nil {
			fmt.Fprintf(os.Stderr, "msb-agent: write exit signal: %v\n", err)
		}
	}
	if err := writeExitCode(dir, code); err != nil {
		fmt.Fprintf(os.Stderr, "msb-agent: write exit code: %v\n", err)
	}
	terminateAll(pid1)
	return code
}

// runMain runs the main command to its end and returns its exit code, and the
// signal that killed it if one did. Its stdout and stderr share one pipe so the
// log keeps them in arrival order.
func runMain(cfg Config, r *reaper, lw *logWriter, sigc <-chan os.Signal) (int, syscall.Signal) {
	outR, outW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(lw, "msb-agent: %v\n", err)
		return ExitAgentError, 0
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintf(lw, "msb-agent: %v\n", err)
		return ExitAgentError, 0
	}
	exited := make(chan struct{})
	logged := make(chan struct{})
	go func() { pump(lw, outR, exited); outR.Close(); close(logged) }()

	if os.Getpid() == 1 {
		waitLoopback(lw)
	}
	var pid int
	var wait <-chan syscall.WaitStatus
	path, err := lookPath(cfg.Args[0], cfg.Env)
	if err == nil {
		pid, wait, err = r.spawn(path, cfg.Args, &syscall.ProcAttr{
			Dir:   cfg.WorkingDir,
			Env:   cfg.Env,
			Files: []uintptr{devnull.Fd(), outW.Fd(), outW.Fd()},
			// Own session: a "kill 0" in the main command must not hit the agent.
			Sys: &syscall.SysProcAttr{Setsid: true, Credential: credential(cfg.UID, cfg.GID)},
		})
	}
	outW.Close()
	devnull.Close()
	if err != nil {
		ee := startError(cfg.Args[0], err)
		fmt.Fprintf(lw, "msb-agent: %v\n", ee)
		close(exited)
		<-logged
		return ee.code, 0
	}
	var ws syscall.WaitStatus
loop:
	for {
		select {
		case sig := <-sigc:
			syscall.Kill(pid, sig.(syscall.Signal))
		case ws = <-wait:
			break loop
		}
	}
	close(exited)
	<-logged
	var sig syscall.Signal
	if ws.Signaled() {
		sig = ws.Signal()
	}
	return exitCode(ws), sig
}

// terminateAll stops whatever the main command left behind: SIGTERM, a grace period,
// then SIGKILL. As PID 1, kill(-1) reaches every process of the sandbox; otherwise
// only the agent's descendants are signalled, never the rest of the host.
func terminateAll(pid1 bool) {
	self := os.Getpid()
	if len(descendants(self)) == 0 {
		return
	}
	signalAll := func(sig syscall.Signal) {
		if pid1 {
			syscall.Kill(-1, sig)
			return
		}
		for _, p := range descendants(self) {
			syscall.Kill(p, sig)
		}
	}
	gone := func(d time.Duration) bool {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if len(descendants(self)) == 0 {
				return true
			}
		}
		return false
	}
	signalAll(syscall.SIGTERM)
	if gone(terminateGrace) {
		return
	}
	signalAll(syscall.SIGKILL)
	gone(terminateGrace)
}

// waitLoopback waits until lo is up. The host sets it up from outside right
// after starting the sandbox (the sandbox itself holds no CAP_NET_ADMIN), so
// the command must not start before: a server binding 127.0.0.1 would fail.
func waitLoopback(lw io.Writer) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return // no lo at all (a microVM with other networking): nothing to wait for
		}
		if ifr.Uint16()&unix.IFF_UP != 0 {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(lw, "msb-agent: loopback is still down after 5s; starting anyway")
			return
		}
		time.Sleep(500 * time.Microsecond)
	}
}
