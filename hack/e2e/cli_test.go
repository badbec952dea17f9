package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestApplyWaitTellsFailures: apply --wait and wait report a sandbox that
// cannot be Ready (its command failed, it finished, its image is missing
// under imagePullPolicy: Never) with its phase, exit code and reason, exit 1,
// at once instead of at the timeout; Succeeded is a success for a sandbox
// meant to finish.
func TestApplyWaitTellsFailures(t *testing.T) {
	d := startDaemon(t)
	f := filepath.Join(t.TempDir(), "m.yaml")
	applyWait := func(manifest string) (string, string, int) {
		t.Helper()
		os.WriteFile(f, []byte(manifest), 0o644)
		return d.ctl("apply", "-f", f, "--wait", "--timeout=90s")
	}
	for _, c := range []struct {
		name, manifest, want string
	}{
		{"exit3", sandboxYAML("exit3", "  restartPolicy: Never\n", "sh", "-c", "exit 3"), "sandbox/exit3 failed: phase Failed, exit code 3: Error: the sandbox command exited with code 3"},
		{"nocmd", sandboxYAML("nocmd", "  restartPolicy: Never\n", "/no/such/command"), "sandbox/nocmd failed: phase Failed, exit code 127"},
		{"nopull", strings.Replace(sandboxYAML("nopull", "  imagePullPolicy: Never\n", "true"), "oci:"+imageDir+":latest", "registry.invalid/none:v1", 1),
			"sandbox/nopull failed: phase Pending: PullFailed"},
	} {
		stdout, stderr, code := applyWait(c.manifest)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Contains(stdout, "ready") {
			t.Errorf("apply --wait of %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", c.name, code, stdout, stderr, c.want)
		}
		_, stderr, code = d.ctl("wait", "sb/"+c.name, "--for=condition=Ready", "--timeout=90s")
		if code != 1 || !strings.Contains(stderr, "will not become Ready") {
			t.Errorf("wait for Ready of %s: exit %d, stderr %q; want exit 1 at once", c.name, code, stderr)
		}
	}
	if stdout, stderr, code := applyWait(sandboxYAML("job", "  restartPolicy: Never\n", "true")); code != 0 || !strings.Contains(stdout, "sandbox/job succeeded") {
		t.Errorf("apply --wait of a job that succeeds: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, stderr, code := d.ctl("wait", "sb/job", "--for=condition=Ready", "--timeout=90s"); code != 1 || !strings.Contains(stderr, "phase Succeeded, exit code 0") || !strings.Contains(stderr, "msbctl restart job") {
		t.Errorf("wait for Ready of a finished sandbox: exit %d, stderr %q", code, stderr)
	}

	// exec into a sandbox that ended, or is suspended, says how to start it.
	_, stderr, code := d.ctl("exec", "exit3", "--", "true")
	if code != 1 || !strings.Contains(stderr, "exited with code 3") || !strings.Contains(stderr, "msbctl restart exit3") || strings.Contains(stderr, "msbctl wait") {
		t.Errorf("exec into a Failed sandbox: exit %d, stderr %q", code, stderr)
	}
	d.apply(sandboxYAML("sus", "  operatingMode: Suspended\n", "sleep", "1000"))
	waitFor(t, 60*time.Second, "sus Suspended", func() bool { return field(d.sandbox("sus"), "status.phase") == "Suspended" })
	if _, stderr, code := d.ctl("exec", "sus", "--", "true"); code != 1 || !strings.Contains(stderr, "msbctl resume sus") {
		t.Errorf("exec into a Suspended sandbox: exit %d, stderr %q", code, stderr)
	}
}

// TestInterruptedWaitSaysWhat: a wait ended by SIGINT or SIGTERM prints what
// it still waited for and exits 130 or 143; a pull failure msbd retries is
// reported while the wait goes on.
func TestInterruptedWaitSaysWhat(t *testing.T) {
	d := startDaemon(t)
	f := filepath.Join(t.TempDir(), "m.yaml")
	// A pull that fails and is retried: the wait goes on until interrupted.
	os.WriteFile(f, []byte(strings.Replace(sandboxYAML("stuck", "", "sleep", "1000"), "oci:"+imageDir+":latest", "oci:/nonexistent/image:v1", 1)), 0o644)
	for _, c := range []struct {
		sig  syscall.Signal
		code int
		word string
		args []string
	}{
		{syscall.SIGINT, 130, "interrupted", []string{"apply", "-f", f, "--wait", "--timeout=10m"}},
		{syscall.SIGTERM, 143, "terminated", []string{"wait", "sb/stuck", "--for=condition=Ready", "--timeout=10m"}},
	} {
		cmd := exec.Command(filepath.Join(binDir, "msbctl"), c.args...)
		cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
		var out, errOut syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		// Signal once the wait has seen the failed pull.
		waitFor(t, 60*time.Second, "the retried pull reported", func() bool { return strings.Contains(errOut.String(), "msbd retries the pull, still waiting") })
		cmd.Process.Signal(c.sig)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("msbctl %s did not end on %v", strings.Join(c.args, " "), c.sig)
		}
		if got := cmd.ProcessState.ExitCode(); got != c.code || !strings.Contains(errOut.String(), c.word+" while still waiting for sandbox/stuck") {
			t.Errorf("msbctl %s on %v: exit %d, stderr %q; want %d naming sandbox/stuck", strings.Join(c.args, " "), c.sig, got, errOut.String(), c.code)
		}
	}
}

// TestExecTTYWithoutTerminal: -it with a pipe on standard input is refused at
// once with what to do instead; it never hangs.
func TestExecTTYWithoutTerminal(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("web", "", "sleep", "1000"))
	d.must("wait", "sb/web", "--for=condition=Ready", "--timeout=60s")
	stdout, stderr, code := d.ctlIn([]byte("ls\n"), "exec", "-it", "web", "--", "sh")
	if code != 2 || !strings.Contains(stderr, "standard input is not one") || !strings.Contains(stderr, "exec -i") || stdout != "" {
		t.Errorf("exec -it with piped stdin: exit %d, stdout %q, stderr %q; want refused, exit 2", code, stdout, stderr)
	}
	if got, _, code := d.ctlIn([]byte("echo piped\n"), "exec", "-i", "web", "--", "sh"); code != 0 || got != "piped\n" {
		t.Errorf("exec -i sh with piped stdin: exit %d, stdout %q", code, got)
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
