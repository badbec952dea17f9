package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// buildHostile builds testdata/hostile, static, into a directory a sandbox
// mounts read-only at /probe; it returns the volume lines of a manifest.
func buildHostile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hostile"), "./hack/e2e/testdata/hostile")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building hostile: %v\n%s", err, out)
	}
	return "  volumes: [{hostPath: " + dir + ", mountPath: /probe, readOnly: true}]\n"
}

// eventsFor returns `msbctl events --for sandbox/NAME` output.
func (d *daemon) eventsFor(name string) string {
	d.t.Helper()
	return d.must("events", "--for", "sandbox/"+name)
}

// TestOOMKilledReported: a main command and an exec killed by the memory
// limit are reported as OOMKilled (status, condition, event, msbctl exec's
// message); a command that exits 137 by itself is not.
func TestOOMKilledReported(t *testing.T) {
	d := startDaemon(t)
	vol := buildHostile(t)
	limits := "  resources: {memory: 48Mi}\n  restartPolicy: Never\n"
	d.apply(sandboxYAML("oom-main", vol+limits, "/probe/hostile", "mem", "400") + "---\n" +
		sandboxYAML("exit137", vol+limits, "sh", "-c", "exit 137") + "---\n" +
		sandboxYAML("oom-exec", vol+limits, "sleep", "3600"))

	phase := func(name string) string { s, _ := field(d.sandbox(name), "status.phase").(string); return s }
	waitFor(t, 60*time.Second, "oom-main and exit137 to fail", func() bool {
		return phase("oom-main") == "Failed" && phase("exit137") == "Failed"
	})
	sb := d.sandbox("oom-main")
	if r, _ := field(sb, "status.terminationReason").(string); r != "OOMKilled" {
		t.Errorf("oom-main: terminationReason %q, want OOMKilled", r)
	}
	if code, _ := field(sb, "status.exitCode").(float64); code != 137 {
		t.Errorf("oom-main: exitCode %v, want 137", code)
	}
	if _, r, m := condition(sb, "Ready"); r != "OOMKilled" || !strings.Contains(m, "memory limit (48Mi)") {
		t.Errorf("oom-main: Ready reason %q message %q, want OOMKilled naming the limit", r, m)
	}
	if ev := d.eventsFor("oom-main"); !strings.Contains(ev, "OOMKilled") || !strings.Contains(ev, "Warning") {
		t.Errorf("oom-main: no OOMKilled Warning event:\n%s", ev)
	}
	sb = d.sandbox("exit137")
	if r, _ := field(sb, "status.terminationReason").(string); r != "Error" {
		t.Errorf("exit137: terminationReason %q, want Error", r)
	}
	if _, r, _ := condition(sb, "Ready"); r == "OOMKilled" {
		t.Errorf("exit137: a command that exited 137 itself is called OOMKilled")
	}
	if ev := d.eventsFor("exit137"); strings.Contains(ev, "OOMKilled") {
		t.Errorf("exit137: OOMKilled event:\n%s", ev)
	}

	d.must("wait", "sandbox/oom-exec", "--for=condition=Ready", "--timeout=60s")
	out, errOut, code := d.ctl("exec", "oom-exec", "--", "/probe/hostile", "mem", "400")
	if code != 137 || !strings.Contains(errOut, "OOMKilled") {
		t.Errorf("exec killed by the memory limit: exit %d, stderr %q (stdout %q), want 137 and OOMKilled", code, errOut, out)
	}
	_, errOut, code = d.ctl("exec", "oom-exec", "--", "sh", "-c", "exit 137")
	if code != 137 || strings.Contains(errOut, "OOMKilled") {
		t.Errorf("exec that exits 137 itself: exit %d, stderr %q, want 137 without OOMKilled", code, errOut)
	}
	ev := d.eventsFor("oom-exec")
	n := 0
	for _, line := range strings.Split(ev, "\n") {
		if strings.Contains(line, "OOMKilled") {
			n++
		}
	}
	if n != 1 || !strings.Contains(ev, `exec "/probe/hostile"`) {
		t.Errorf("oom-exec: want exactly one OOMKilled event naming the exec:\n%s", ev)
	}
	if p := phase("oom-exec"); p != "Running" {
		t.Errorf("oom-exec: phase %s after an exec was OOM-killed, want Running", p)
	}
}

// TestExecEndsOnTermAndHup: SIGTERM or SIGHUP ends msbctl exec at once
// (143, 129) even when the remote command ignores them, and the remote
// command is gone; SIGINT is passed to the command first.
func TestExecEndsOnTermAndHup(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("sig", "", "sleep", "3600"))
	d.must("wait", "sandbox/sig", "--for=condition=Ready", "--timeout=60s")
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		want int
	}{{"TERM", syscall.SIGTERM, 143}, {"HUP", syscall.SIGHUP, 129}} {
		t.Run(tc.name, func(t *testing.T) {
			marker := fmt.Sprintf("sleep %d", 1000+tc.want) // one per case, seen in ps
			cmd := exec.Command(filepath.Join(binDir, "msbctl"), "exec", "sig", "--", "sh", "-c",
				"trap '' TERM HUP INT; echo started; exec "+marker)
			cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
			var stdout, stderr guardBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			waitFor(t, 30*time.Second, "the command to start", func() bool { return strings.Contains(stdout.String(), "started") })
			cmd.Process.Signal(tc.sig)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("msbctl exec still running 30s after SIG%s", tc.name)
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.want {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), "hung up") {
				t.Errorf("stderr does not say msbctl hung up: %q", stderr.String())
			}
			waitFor(t, 30*time.Second, "the remote command to be killed", func() bool {
				out, _, _ := d.ctl("exec", "sig", "--", "ps", "-o", "args")
				return !strings.Contains(out, marker)
			})
		})
	}
	t.Run("INT", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(binDir, "msbctl"), "exec", "sig", "--", "sh", "-c",
			"trap 'echo got-int; exit 7' INT; echo started; while :; do sleep 0.1; done")
		cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
		var stdout, stderr guardBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		waitFor(t, 30*time.Second, "the command to start", func() bool { return strings.Contains(stdout.String(), "started") })
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("msbctl exec still running 30s after SIGINT")
		}
		if code := cmd.ProcessState.ExitCode(); code != 7 || !strings.Contains(stdout.String(), "got-int") {
			t.Errorf("SIGINT: exit %d stdout %q, want the command's own exit 7 after its trap ran", code, stdout.String())
		}
	})
}

// guardBuffer is a bytes.Buffer safe for a writer and a polling reader.
type guardBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *guardBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *guardBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAgentUnresponsive: a sandbox whose agent is stopped from the host
// turns Ready=False AgentUnresponsive, and execs — new ones and one already
// running — fail with that reason instead of hanging; once the agent
// continues the sandbox is Ready again and exec works.
func TestAgentUnresponsive(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("frozen", "", "sleep", "3600"))
	d.must("wait", "sandbox/frozen", "--for=condition=Ready", "--timeout=60s")
	pid := int(field(d.sandbox("frozen"), "status.pid").(float64))
	d.must("exec", "frozen", "--", "true")

	long := exec.Command(filepath.Join(binDir, "msbctl"), "exec", "frozen", "--", "sh", "-c", "echo started; exec sleep 1000")
	long.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	var longOut, longErr guardBuffer
	long.Stdout, long.Stderr = &longOut, &longErr
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	longDone := make(chan struct{})
	go func() { long.Wait(); close(longDone) }()
	t.Cleanup(func() { long.Process.Kill(); <-longDone })
	waitFor(t, 30*time.Second, "the long exec to start", func() bool { return strings.Contains(longOut.String(), "started") })

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	_, errOut, code := d.ctl("exec", "frozen", "--", "true")
	if code != 1 || !strings.Contains(errOut, "AgentUnresponsive") {
		t.Errorf("exec into a stopped agent: exit %d, stderr %q; want 1 and AgentUnresponsive", code, errOut)
	}
	select {
	case <-longDone:
		if code := long.ProcessState.ExitCode(); code != 1 || !strings.Contains(longErr.String(), "AgentUnresponsive") {
			t.Errorf("running exec: exit %d, stderr %q; want 1 and AgentUnresponsive", code, longErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("an exec running when the agent stopped still waits after 60s")
	}
	waitFor(t, 60*time.Second, "Ready=False AgentUnresponsive", func() bool {
		s, r, _ := condition(d.sandbox("frozen"), "Ready")
		return s == "False" && r == "AgentUnresponsive"
	})
	if ev := d.eventsFor("frozen"); !strings.Contains(ev, "AgentUnresponsive") {
		t.Errorf("no AgentUnresponsive event:\n%s", ev)
	}
	restarts := field(d.sandbox("frozen"), "status.restartCount")

	syscall.Kill(pid, syscall.SIGCONT)
	waitFor(t, 60*time.Second, "Ready=True after SIGCONT", func() bool {
		s, _, _ := condition(d.sandbox("frozen"), "Ready")
		return s == "True"
	})
	if out := d.must("exec", "frozen", "--", "echo", "back"); out != "back\n" {
		t.Errorf("exec after SIGCONT printed %q", out)
	}
	sb := d.sandbox("frozen")
	if p, _ := field(sb, "status.phase").(string); p != "Running" || field(sb, "status.restartCount") != restarts {
		t.Errorf("after SIGCONT: phase %s restartCount %v, want Running and %v", p, field(sb, "status.restartCount"), restarts)
	}
}

// TestAgentCannotBeTraced: a sandbox process (root in the sandbox) cannot
// ptrace the agent, PID 1, nor read its descriptors; exec still answers.
func TestAgentCannotBeTraced(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("tracer", buildHostile(t), "sleep", "3600"))
	d.must("wait", "sandbox/tracer", "--for=condition=Ready", "--timeout=60s")
	out, _, code := d.ctl("exec", "tracer", "--", "/probe/hostile", "ptrace", "1")
	if code != 1 || !strings.Contains(out, "refused: operation not permitted") {
		t.Errorf("ptrace(PTRACE_ATTACH, 1) from the sandbox: exit %d, %q; want it refused with EPERM", code, out)
	}
	// The check has teeth: a process of the sandbox's own can be traced.
	out, _, code = d.ctl("exec", "tracer", "--", "sh", "-c", "sleep 100 & /probe/hostile ptrace $!; kill $!")
	if code != 0 || !strings.Contains(out, "attached") {
		t.Errorf("ptrace of a sibling: exit %d, %q; want attached (else the test proves nothing)", code, out)
	}
	if out, _, code := d.ctl("exec", "tracer", "--", "cat", "/proc/1/environ"); code == 0 {
		t.Errorf("the sandbox reads the agent's environment: %q", out)
	}
	if out := d.must("exec", "tracer", "--", "echo", "still here"); out != "still here\n" {
		t.Errorf("exec after the ptrace attempt printed %q", out)
	}
}

// TestForkBombKeepsAgent: a fork bomb fills the sandbox's pids limit while
// 50 execs arrive at once: the agent survives (same pid, same restart
// count, Running), every exec ends, and once the bomb is killed exec works.
func TestForkBombKeepsAgent(t *testing.T) {
	requireWorkloadCgroup(t)
	d := startDaemon(t)
	d.apply(sandboxYAML("bomb", buildHostile(t)+"  resources: {pids: 48, memory: 256Mi}\n", "sleep", "3600"))
	d.must("wait", "sandbox/bomb", "--for=condition=Ready", "--timeout=60s")
	before := d.sandbox("bomb")
	pid, restarts := field(before, "status.pid"), field(before, "status.restartCount")

	bomb := exec.Command(filepath.Join(binDir, "msbctl"), "exec", "bomb", "--", "/probe/hostile", "forkbomb")
	bomb.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	if err := bomb.Start(); err != nil {
		t.Fatal(err)
	}
	bombDone := make(chan struct{})
	go func() { bomb.Wait(); close(bombDone) }()
	t.Cleanup(func() { bomb.Process.Kill(); <-bombDone })
	// Full: an exec that needs a fork (sh -c with a pipe) fails.
	waitFor(t, 60*time.Second, "the fork bomb to fill the pids limit", func() bool {
		_, _, code := d.ctl("exec", "bomb", "--", "sh", "-c", "true | true")
		return code != 0
	})

	var wg sync.WaitGroup
	codes := make([]int, 50)
	errs := make([]string, 50)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i], codes[i] = d.ctl("exec", "bomb", "--", "true")
		}()
	}
	wg.Wait()
	t.Logf("exit codes of 50 execs under the fork bomb: %v", codes)
	for i, e := range errs {
		if e != "" {
			t.Logf("exec %d: %s", i, e)
			break
		}
	}

	after := d.sandbox("bomb")
	if p, _ := field(after, "status.phase").(string); p != "Running" || field(after, "status.pid") != pid || field(after, "status.restartCount") != restarts {
		t.Fatalf("under the fork bomb: phase %s pid %v restartCount %v; want Running, %v, %v",
			p, field(after, "status.pid"), field(after, "status.restartCount"), pid, restarts)
	}
	// Hanging up on the bomb's exec kills its process group: all of it.
	bomb.Process.Signal(syscall.SIGTERM)
	waitFor(t, 60*time.Second, "the fork bomb to be gone", func() bool {
		out, _, code := d.ctl("exec", "bomb", "--", "sh", "-c", "echo ok | cat")
		return code == 0 && out == "ok\n"
	})
	after = d.sandbox("bomb")
	if field(after, "status.pid") != pid || field(after, "status.restartCount") != restarts {
		t.Errorf("after the fork bomb: pid %v restartCount %v; want %v, %v", field(after, "status.pid"), field(after, "status.restartCount"), pid, restarts)
	}
}

// requireWorkloadCgroup skips where the container driver makes no workload
// cgroup: it needs cgroup v1's memory and pids hierarchies, or a cgroup v2
// host (/sys/fs/cgroup the unified hierarchy) with the memory and pids
// controllers on Linux 5.16 or later (see vmdriver/container/cgroupv2.go).
func requireWorkloadCgroup(t *testing.T) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			t.Fatal(err)
		}
		ctl := strings.Fields(string(b))
		if !slices.Contains(ctl, "memory") || !slices.Contains(ctl, "pids") {
			t.Skipf("this cgroup v2 host offers controllers %v, without memory and pids the workload has no cgroup of its own", ctl)
		}
		var u unix.Utsname
		unix.Uname(&u)
		rel := unix.ByteSliceToString(u.Release[:])
		var major, minor int
		fmt.Sscanf(rel, "%d.%d", &major, &minor)
		if major < 5 || (major == 5 && minor < 16) {
			t.Skipf("Linux %s: before 5.16 the agent cannot move commands into a cgroup v2 workload cgroup outside its cgroup namespace, so the driver makes none", rel)
		}
		return
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(mi), "\n") {
		_, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(post)
		if !ok || len(f) < 3 || f[0] != "cgroup" {
			continue
		}
		for _, o := range strings.Split(f[2], ",") {
			have[o] = true
		}
	}
	if !have["memory"] || !have["pids"] {
		t.Skip("this cgroup v1 host mounts no memory and pids hierarchies: the workload has no cgroup of its own and the agent no reserve")
	}
}
