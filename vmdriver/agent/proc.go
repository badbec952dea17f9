package agent

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper is the only code in the agent that calls wait4. As PID 1 (or a child
// subreaper) the agent inherits every orphan of the sandbox and must reap them, but
// a wait4(-1) loop would steal the exit status of the processes the agent itself
// started if anything else waited on them too. So nothing else waits: every start
// goes through spawn, which registers the pid under the same lock the reaper holds
// while it calls wait4, and the reaper hands each status to whoever registered the pid.
// Holding the lock across fork also keeps syscall.ForkExec's own wait4(pid) (done when
// exec fails in the child) from racing with the reaper.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	sigc    chan os.Signal
}

var (
	procs     reaper
	procsOnce sync.Once
)

// startReaper starts the reaper; SIGCHLD is subscribed before any child exists.
func startReaper() *reaper {
	procsOnce.Do(func() {
		procs.waiters = make(map[int]chan syscall.WaitStatus)
		procs.sigc = make(chan os.Signal, 1)
		signal.Notify(procs.sigc, syscall.SIGCHLD)
		go func() {
			procs.reap()
			for range procs.sigc {
				procs.reap()
			}
		}()
	})
	return &procs
}

// reap collects every child that has exited. SIGCHLDs coalesce, so it loops until
// wait4 has nothing more to report.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if c, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			c <- ws
		}
	}
}

// spawn starts argv0 and returns a channel that receives its wait status once.
func (r *reaper) spawn(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	if len(workloadProcs) > 0 {
		// Until placed, a trampoline's threads count against the agent's
		// reserve: only a few at a time.
		placing <- struct{}{}
		defer func() { <-placing }()
	}
	r.mu.Lock()
	var pid int
	var err error
	var gate *workloadGate
	if len(workloadProcs) > 0 {
		pid, gate, err = forkTrampoline(argv0, argv, attr)
	} else {
		pid, err = syscall.ForkExec(argv0, argv, attr)
	}
	if err != nil {
		r.mu.Unlock()
		return 0, nil, err
	}
	c := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = c
	r.mu.Unlock()
	if gate != nil {
		// Outside the lock: the reaper must go on while this one starts.
		if err := gate.place(pid); err != nil {
			return 0, nil, err // killed before it ran anything; reaped as usual
		}
	}
	return pid, c, nil
}

// exitCode maps a wait status to a shell-style exit code: 128+signal when killed.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// execError is a failure to start a command, with the exit code a shell would give.
type execError struct {
	name string
	code int // 127 not found, 126 found but not runnable
	err  error
}

func (e *execError) Error() string { return fmt.Sprintf("exec %q: %v", e.name, e.err) }

var errNotFound = errors.New("executable file not found in $PATH")

// lookPath resolves file through the PATH of env, as docker exec does, so the lookup
// uses the sandbox's PATH and not the agent's own.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil // exec reports ENOENT/EACCES with the right code
	}
	path, ok := envValue(env, "PATH")
	if !ok {
		path = defaultPath
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 != 0 {
			return p, nil
		}
		if denied == nil {
			denied = &execError{name: file, code: 126, err: syscall.EACCES}
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", &execError{name: file, code: 127, err: errNotFound}
}

// startError turns a fork/exec failure into an execError with a shell exit code.
func startError(name string, err error) *execError {
	var ee *execError
	if errors.As(err, &ee) {
		return ee
	}
	code := 126
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		code = 127
	}
	return &execError{name: name, code: code, err: err}
}

func envValue(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// mergeEnv returns base with each later list overriding earlier keys, keeping order.
func mergeEnv(lists ...[]string) []string {
	var out []string
	idx := map[string]int{}
	for _, l := range lists {
		for _, kv := range l {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// credential returns the credential to switch to, or nil when the agent already runs
// as uid:gid and is not root (tests run the agent unprivileged).
func credential(uid, gid uint32) *syscall.Credential {
	if os.Geteuid() != 0 && int(uid) == os.Geteuid() && int(gid) == os.Getegid() {
		return nil
	}
	// Groups is empty: root's supplementary groups must not leak into the sandbox user.
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
}

// lookupUser resolves "uid[:gid]" or "name[:group]" through the sandbox's
// /etc/passwd and /etc/group (the agent runs inside the sandbox's mount namespace).
func lookupUser(spec string, defGID uint32) (uid, gid uint32, err error) {
	user, group, hasGroup := strings.Cut(spec, ":")
	gid = defGID
	if n, err := strconv.ParseUint(user, 10, 32); err == nil {
		uid = uint32(n)
	} else {
		f, err := lookupDB("/etc/passwd", user)
		if err != nil {
			return 0, 0, fmt.Errorf("user %q: %w", user, err)
		}
		u, _ := strconv.ParseUint(f[2], 10, 32)
		g, _ := strconv.ParseUint(f[3], 10, 32)
		uid, gid = uint32(u), uint32(g)
	}
	if hasGroup {
		if n, err := strconv.ParseUint(group, 10, 32); err == nil {
			gid = uint32(n)
		} else {
			f, err := lookupDB("/etc/group", group)
			if err != nil {
				return 0, 0, fmt.Errorf("group %q: %w", group, err)
			}
			g, _ := strconv.ParseUint(f[2], 10, 32)
			gid = uint32(g)
		}
	}
	return uid, gid, nil
}

func lookupDB(path, name string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("not found in %s", path)
}

// descendants lists the pids below self by walking /proc. As a subreaper (not PID 1)
// the agent must never signal processes outside its own tree.
func descendants(self int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may contain spaces and parentheses: fields resume after the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	var out []int
	queue := []int{self}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// signalName is the SSH form of a signal name ("TERM"), or "" if unknown.
func signalName(sig syscall.Signal) string {
	return strings.TrimPrefix(unix.SignalName(sig), "SIG")
}

// signalNum parses the SSH form of a signal name; 0 if unknown.
func signalNum(name string) syscall.Signal {
	return unix.SignalNum("SIG" + name)
}
