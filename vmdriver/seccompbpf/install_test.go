package seccompbpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The kernel tests install filters in a re-executed copy of the test binary
// (TestHelperProcess), never in the test process itself.
const (
	helperModeEnv = "SECCOMPBPF_TEST_HELPER"
	helperProgEnv = "SECCOMPBPF_TEST_PROG"
)

// smallProfile has observable outcomes on both sides of each condition.
func smallProfile() *specs.LinuxSeccomp {
	u := func(v uint) *uint { return &v }
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(99)},
			// personality(0xffffffff) only queries; anything else is refused.
			{Names: []string{"personality"}, Action: specs.ActErrno, ErrnoRet: u(13), Args: []specs.LinuxSeccompArg{
				{Index: 0, Op: specs.OpNotEqual, Value: 0xffffffff},
			}},
			// getpgid's pid_t ignores the high word; the filter must not.
			{Names: []string{"getpgid"}, Action: specs.ActErrno, ErrnoRet: u(7), Args: []specs.LinuxSeccompArg{
				{Index: 0, Op: specs.OpGreaterThan, Value: 0xffffffff},
			}},
		},
	}
}

// seccompAvailable reports why filters cannot be tested here, or "".
func seccompAvailable() string {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err.Error()
	}
	if !strings.Contains(string(status), "\nSeccomp:") {
		return "kernel without CONFIG_SECCOMP (no Seccomp: in /proc/self/status)"
	}
	act := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&act)))
	if errno != 0 {
		return fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL, KILL_PROCESS): %v", errno)
	}
	return ""
}

// runHelper compiles p, hands it to a child over the wire format, and returns
// the child's key=value results.
func runHelper(t *testing.T, mode string, p *specs.LinuxSeccomp) (map[string]string, string, error) {
	t.Helper()
	requireNative(t)
	if why := seccompAvailable(); why != "" {
		t.Skipf("seccomp unavailable: %s", why)
	}
	prog, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(path, Marshal(prog), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperModeEnv+"="+mode, helperProgEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	res := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			res[k] = v
		}
	}
	return res, string(out) + stderr.String(), err
}

func expect(t *testing.T, res map[string]string, want map[string]string, output string) {
	t.Helper()
	for k, v := range want {
		if res[k] != v {
			t.Errorf("%s = %q, want %q", k, res[k], v)
		}
	}
	if t.Failed() {
		t.Logf("child output:\n%s", output)
	}
}

func TestInstallSmallProfile(t *testing.T) {
	res, out, err := runHelper(t, "small", smallProfile())
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	expect(t, res, map[string]string{
		"install":                  "ok",
		"getppid":                  "errno 99",
		"getppid_other_thread":     "errno 99",
		"personality_0xffffffff":   "ok",
		"personality_0x100000000":  "errno 13",
		"personality_0x1ffffffff":  "errno 13",
		"personality_0x0":          "errno 13",
		"getpgid_0x0":              "ok",
		"getpgid_0x100000000":      "errno 7",
		"getpid":                   "ok",
		"status_Seccomp":           "2",
		"status_NoNewPrivs":        "1",
		"other_thread_Seccomp":     "2",
		"other_thread_NoNewPrivs":  "1",
		"threads_without_seccomp2": "0",
	}, out)
}

func TestInstallDefaultProfile(t *testing.T) {
	res, out, err := runHelper(t, "default", defaultProfile(t))
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	expect(t, res, map[string]string{
		"install":                 "ok",
		"getpid":                  "ok",
		"unshare_newuser":         "errno 1",
		"clone3":                  "errno 38",
		"mount":                   "errno 1",
		"personality_0xffffffff":  "ok",
		"personality_0x100000000": "errno 1",
		"socket_unix":             "ok",
		"socket_vsock":            "errno 1",
		"runtime":                 "ok",
		"status_Seccomp":          "2",
		"status_NoNewPrivs":       "1",
	}, out)
}

// TestInstallKillsX32 checks that an x32 syscall kills the whole process.
func TestInstallKillsX32(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the x32 ABI exists only on an x86_64 kernel entry; GOARCH is %s", runtime.GOARCH)
	}
	res, out, err := runHelper(t, "x32", defaultProfile(t))
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("child: %v, want death by SIGSYS\n%s", err, out)
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("child: %v, want death by SIGSYS\n%s", err, out)
	}
	expect(t, res, map[string]string{"install": "ok", "survived": ""}, out)
}

// TestInstallTSYNCFailure checks that Install fails, and installs nothing,
// when a thread cannot be synchronized.
func TestInstallTSYNCFailure(t *testing.T) {
	res, out, err := runHelper(t, "tsyncfail", smallProfile())
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(res["install"], "cannot be synchronized") {
		t.Errorf("install = %q, want a TSYNC failure", res["install"])
	}
	if res["install_names_thread"] != "yes" {
		t.Errorf("error does not name the thread %s: %q", res["other_tid"], res["install"])
	}
	expect(t, res, map[string]string{
		"getppid":        "ok",
		"status_Seccomp": "0",
	}, out)
}

// TestHelperProcess is the child of the kernel tests.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		t.Skip("not a test of its own: the kernel tests run it as their child process, with " + helperModeEnv + " set")
	}
	helper(mode, os.Getenv(helperProgEnv))
	os.Exit(0)
}

func helper(mode, path string) {
	say := func(k, v string) { fmt.Printf("%s=%s\n", k, v) }
	result := func(k string, _ uintptr, errno syscall.Errno) {
		if errno != 0 {
			say(k, fmt.Sprintf("errno %d", int(errno)))
		} else {
			say(k, "ok")
		}
	}
	// wide passes a 64-bit argument (the package only supports 64-bit
	// architectures; this keeps the file compiling elsewhere).
	wide := func(v uint64) uintptr { return uintptr(v) }
	sys := func(k string, trap uintptr, args ...uintptr) {
		var a [6]uintptr
		copy(a[:], args)
		r, _, errno := unix.Syscall6(trap, a[0], a[1], a[2], a[3], a[4], a[5])
		result(k, r, errno)
	}
	statusOf := func(prefix, file string) {
		b, err := os.ReadFile(file)
		if err != nil {
			say(prefix+"error", err.Error())
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":\t"); ok && (k == "Seccomp" || k == "NoNewPrivs") {
				say(prefix+k, strings.TrimSpace(v))
			}
		}
	}

	b, err := os.ReadFile(path)
	if err != nil {
		say("install", err.Error())
		return
	}
	prog, err := Unmarshal(b)
	if err != nil {
		say("install", err.Error())
		return
	}

	// Another thread, running before the filter is installed, must be
	// filtered too.
	runtime.LockOSThread()
	mainTid := unix.Gettid()
	ready, run, done := make(chan int), make(chan struct{}), make(chan syscall.Errno)
	go func() {
		runtime.LockOSThread()
		if mode == "tsyncfail" {
			// A filter of its own makes this thread impossible to
			// synchronize with the main thread's (empty) filter tree.
			allow := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
			fprog := unix.SockFprog{Len: 1, Filter: &allow[0]}
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				panic(err)
			}
			if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
				panic(errno)
			}
		}
		ready <- unix.Gettid()
		<-run
		_, _, errno := unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		done <- errno
		select {} // keep the thread
	}()
	otherTid := <-ready
	if otherTid == mainTid {
		say("install", "threads not distinct")
		return
	}
	say("other_tid", fmt.Sprint(otherTid))

	if err := Install(prog); err != nil {
		say("install", err.Error())
		say("install_names_thread", map[bool]string{true: "yes", false: "no"}[strings.Contains(err.Error(), fmt.Sprintf("thread %d ", otherTid))])
	} else {
		say("install", "ok")
	}
	statusOf("status_", "/proc/thread-self/status")

	switch mode {
	case "small", "tsyncfail":
		sys("getppid", unix.SYS_GETPPID)
		if mode == "tsyncfail" {
			return
		}
		sys("personality_0xffffffff", unix.SYS_PERSONALITY, 0xffffffff)
		sys("personality_0x100000000", unix.SYS_PERSONALITY, wide(0x1_0000_0000))
		sys("personality_0x1ffffffff", unix.SYS_PERSONALITY, wide(0x1_ffff_ffff))
		sys("personality_0x0", unix.SYS_PERSONALITY, 0)
		sys("getpgid_0x0", unix.SYS_GETPGID, 0)
		sys("getpgid_0x100000000", unix.SYS_GETPGID, wide(0x1_0000_0000))
		sys("getpid", unix.SYS_GETPID)
		close(run)
		if errno := <-done; errno != 0 {
			say("getppid_other_thread", fmt.Sprintf("errno %d", int(errno)))
		} else {
			say("getppid_other_thread", "ok")
		}
		statusOf("other_thread_", fmt.Sprintf("/proc/self/task/%d/status", otherTid))
		tasks, _ := os.ReadDir("/proc/self/task")
		without := 0
		for _, task := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "status"))
			if err != nil || !strings.Contains(string(b), "\nSeccomp:\t2\n") {
				without++
			}
		}
		say("threads_without_seccomp2", fmt.Sprint(without))
	case "default":
		sys("getpid", unix.SYS_GETPID)
		sys("unshare_newuser", unix.SYS_UNSHARE, unix.CLONE_NEWUSER)
		sys("clone3", unix.SYS_CLONE3, 0, 0)
		sys("mount", unix.SYS_MOUNT, 0, 0, 0, 0, 0)
		sys("personality_0xffffffff", unix.SYS_PERSONALITY, 0xffffffff)
		sys("personality_0x100000000", unix.SYS_PERSONALITY, wide(0x1_0000_0000))
		for _, s := range []struct {
			k      string
			domain int
		}{{"socket_unix", unix.AF_UNIX}, {"socket_vsock", unix.AF_VSOCK}} {
			fd, err := unix.Socket(s.domain, unix.SOCK_STREAM, 0)
			if err != nil {
				result(s.k, 0, err.(syscall.Errno))
			} else {
				unix.Close(fd)
				say(s.k, "ok")
			}
		}
		// The Go runtime keeps working: new threads, GC, timers, pipes.
		errs := make(chan error, 8)
		for range 8 {
			go func() {
				runtime.LockOSThread()
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					errs <- err
					return
				}
				unix.Write(p[1], []byte("x"))
				buf := make([]byte, 1)
				_, err := unix.Read(p[0], buf)
				unix.Close(p[0])
				unix.Close(p[1])
				errs <- err
			}()
		}
		ok := true
		for range 8 {
			if err := <-errs; err != nil {
				ok = false
			}
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // a timer under the filter; its length is not checked
		say("runtime", map[bool]string{true: "ok", false: "failed"}[ok])
	case "x32":
		// getpid through the x32 ABI: the filter must kill the process.
		unix.Syscall(0x40000000|unix.SYS_GETPID, 0, 0, 0)
		say("survived", "yes")
	}
}

func TestUsable(t *testing.T) {
	// Every kernel this project runs on (Debian 12: 6.1) has KILL_PROCESS.
	if err := Usable(); err != nil {
		t.Fatalf("Usable: %v", err)
	}
}
