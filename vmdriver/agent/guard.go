package agent

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The agent is the sandbox's PID 1 and the only way in: the workload must
// not be able to freeze or starve it.
//
//   - Freezing: ptrace(PTRACE_ATTACH, 1) from inside, then detaching with
//     SIGSTOP, would stop it. A non-dumpable process can only be traced by a
//     holder of CAP_SYS_PTRACE in its user namespace, which sandboxes never
//     get. The host gives the sandbox an agent binary it may execute but
//     not read, so the kernel makes the agent and its trampolines
//     non-dumpable at execve (vmdriver/container/agentbin.go), and
//     hardenAgent clears the dumpable flag again first thing. (It also
//     hides /proc/1/{mem,fd,environ,...} from the workload.)
//   - Starving: the workload's pids and memory limits apply to a child
//     cgroup of the sandbox's ("workload", made by the host), while the agent
//     stays in the parent with a small reserve above them. Every process the
//     agent starts is moved there before it runs a single instruction of the
//     workload's (see forkTrampoline), so a fork bomb or a memory hog hits
//     the workload's limit, never the agent's threads or memory.

// hardenAgent makes the agent non-dumpable and keeps its runtime small: two
// Ps are plenty for relaying streams and keep the threads it needs few.
func hardenAgent() error {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), 2))
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the agent non-dumpable: %w", err)
	}
	return nil
}

// workloadProcs are the cgroup.procs files (one per cgroup hierarchy) of
// the workload's cgroup, opened by the host and inherited: the kernel
// checks a write against the opener's credentials, so the agent (root only
// in its user namespace) may move processes there. They never reach a
// child: close-on-exec, and a non-dumpable agent's descriptors cannot be
// taken through /proc or pidfd_getfd.
var workloadProcs []int

// UseWorkloadCgroups makes every process the agent starts run in the cgroup
// whose cgroup.procs files the host passed as fds. Call it before RunInit.
func UseWorkloadCgroups(fds []int) error {
	for _, fd := range fds {
		if fd <= 2 {
			return fmt.Errorf("workload cgroup descriptor %d: must be above 2", fd)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("workload cgroup descriptor %d: %w", fd, err)
		}
		unix.CloseOnExec(fd)
		workloadProcs = append(workloadProcs, fd)
	}
	return nil
}

// ParseFDs parses a comma-separated list of descriptor numbers.
func ParseFDs(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("descriptor %q: want a number", part)
		}
		out = append(out, n)
	}
	return out, nil
}

// enterWorkload moves pid into the workload cgroup in every hierarchy.
func enterWorkload(pid int) error {
	b := []byte(strconv.Itoa(pid))
	for _, fd := range workloadProcs {
		if _, err := unix.Pwrite(fd, b, 0); err != nil {
			return fmt.Errorf("move pid %d into the workload cgroup: %w", pid, err)
		}
	}
	return nil
}

// EnterVerb is the hidden msb-agent subcommand that runs first in every
// process the agent starts while workload cgroups are in use (RunEnter).
const EnterVerb = "enter-workload"

// selfExe is the agent's own binary, executed as the trampoline.
const selfExe = "/proc/self/exe"

// trampolineEnv is put before the command's environment for the
// trampoline alone (RunEnter drops it again): one P and no GC, so its Go
// runtime needs no thread once it is in the workload's cgroup, whose pids
// limit may be full.
var trampolineEnv = []string{"GOMAXPROCS=1", "GOGC=off"}

// workloadGate is the handshake with a trampoline: it says "ready" on one
// pipe once its runtime has started (every thread it needs exists), the
// agent moves it into the workload cgroup, then lets it go on the other.
type workloadGate struct {
	ready *os.File // read end: the trampoline's fd 4
	gate  *os.File // write end: the trampoline's fd 3
}

// forkTrampoline starts argv0 through the trampoline, "msb-agent
// enter-workload" (RunEnter): a fork of the agent with the credentials,
// directory, session and descriptors of attr, which execs argv0 only once
// place has moved it into the workload cgroup. So nothing the workload
// runs is ever charged to the agent's reserve. Called with the reaper's
// lock held, like ForkExec in spawn.
func forkTrampoline(argv0 string, argv []string, attr *syscall.ProcAttr) (int, *workloadGate, error) {
	if len(attr.Files) != 3 {
		return 0, nil, errors.New("internal error: a workload process needs exactly stdin, stdout and stderr")
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		gateR.Close()
		gateW.Close()
		return 0, nil, err
	}
	a := *attr
	a.Files = append(append([]uintptr(nil), attr.Files...), gateR.Fd(), readyW.Fd())
	a.Env = append(append([]string(nil), trampolineEnv...), attr.Env...)
	args := append([]string{"msb-agent", EnterVerb, argv0}, argv...)
	pid, err := syscall.ForkExec(selfExe, args, &a)
	gateR.Close()
	readyW.Close()
	if err != nil {
		gateW.Close()
		readyR.Close()
		return 0, nil, err
	}
	return pid, &workloadGate{ready: readyR, gate: gateW}, nil
}

// placing bounds the trampolines not yet moved into the workload cgroup:
// each holds a few threads of the agent's pids reserve (its Go runtime's)
// until then, so 50 execs arriving at once must not start 50 of them.
var placing = make(chan struct{}, 4)

// placeTimeout bounds the wait for a trampoline's "ready".
const placeTimeout = 10 * time.Second

// place waits for the trampoline pid to be ready, moves it into the
// workload cgroup and lets it exec. On failure it is killed first: it
// never runs anything outside the workload cgroup.
func (g *workloadGate) place(pid int) error {
	defer g.ready.Close()
	defer g.gate.Close()
	fail := func(err error) error {
		syscall.Kill(pid, syscall.SIGKILL)
		return fmt.Errorf("start in the workload cgroup: %w", err)
	}
	g.ready.SetReadDeadline(time.Now().Add(placeTimeout))
	var b [1]byte
	if _, err := g.ready.Read(b[:]); err != nil {
		return fail(err)
	}
	if err := enterWorkload(pid); err != nil {
		return fail(err)
	}
	if _, err := g.gate.Write([]byte{1}); err != nil {
		return fail(err)
	}
	return nil
}

// trampolineStartHook, nil but in test builds (guard_teststop.go), runs
// first in the trampoline: a test stops it there, where a sandbox process
// would find it before its own PR_SET_DUMPABLE.
var trampolineStartHook func(args []string)

// RunEnter is the trampoline (see forkTrampoline): args are the path to
// exec and its argv. It says it is ready, waits until the agent has placed
// it, then execs; an exec that fails is reported the way the agent
// reports one.
func RunEnter(args []string) int {
	if trampolineStartHook != nil {
		trampolineStartHook(args)
	}
	// Not traceable by the workload while it waits outside the workload
	// cgroup (it runs with the workload's credentials; a tracer could make
	// it fork there, beyond the workload's limits). The host makes the
	// agent binary executable but not readable by any sandbox id (see
	// vmdriver/container/agentbin.go), so the kernel already made this
	// process non-dumpable at execve, before its first instruction; this
	// call covers an agent binary that is readable (an older bundle). The
	// exec below makes the command dumpable again as usual.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	// Once placed, the workload's pids limit may be full: nothing here may
	// need a new thread, so raw calls that never hand the P over.
	debug.SetGCPercent(-1)
	b := [1]byte{1}
	syscall.RawSyscall(syscall.SYS_WRITE, 4, uintptr(unsafe.Pointer(&b[0])), 1)
	syscall.RawSyscall(syscall.SYS_CLOSE, 4, 0, 0)
	var n uintptr
	var errno syscall.Errno
	for {
		n, _, errno = syscall.RawSyscall(syscall.SYS_READ, 3, uintptr(unsafe.Pointer(&b[0])), 1)
		if errno != syscall.EINTR {
			break
		}
	}
	syscall.RawSyscall(syscall.SYS_CLOSE, 3, 0, 0)
	if errno != 0 || n != 1 {
		os.Stderr.WriteString("msb-agent: the agent could not place the command in the sandbox's workload cgroup\n")
		return 126
	}
	if len(args) < 2 {
		os.Stderr.WriteString("msb-agent: " + EnterVerb + ": want PATH ARGV0 [ARGS...]\n")
		return 126
	}
	env := os.Environ()
	if len(env) >= len(trampolineEnv) && slices.Equal(env[:len(trampolineEnv)], trampolineEnv) {
		env = env[len(trampolineEnv):]
	}
	err := syscall.Exec(args[0], args[1:], env)
	ee := startError(args[1], err)
	fmt.Fprintf(os.Stderr, "msb-agent: %v\n", ee)
	return ee.code
}
