package container

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver/agent"
)

// buildStatic builds a package of this module, static, into a directory
// every user may search (a sandbox's root is an unprivileged host id).
func buildStatic(t *testing.T, pkg string, tags ...string) string {
	t.Helper()
	dir := tempDir(t)
	out := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir, _ = filepath.Abs("../..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestTrampolineNotTraceable: a process of the sandbox cannot ptrace the
// trampoline that starts a command (msb-agent enter-workload) at any
// moment, even before the trampoline's own PR_SET_DUMPABLE: the test's
// agent build stops the trampoline of a command named stop-in-trampoline
// as its first act, and a program in the sandbox tries to attach to it
// then. Nor can the sandbox read the agent binary. A readable agent
// binary (the old mount) lets the attach through.
func TestTrampolineNotTraceable(t *testing.T) {
	if len(workloadMounts()) == 0 {
		if unified, why := unifiedCgroups(); !unified || why != "" {
			t.Skipf("this host gives sandboxes no workload cgroup, so the agent starts commands without a trampoline (cgroup v2: %v; %s)", unified, why)
		}
	}
	f := newFixture(t)
	ctx := context.Background()
	copyFile(t, buildStatic(t, "./vmdriver/container/testdata/ptracer"), filepath.Join(f.layers[0], "bin", "ptracer"), 0o755)
	spec := f.spec("exec sleep 1000")
	spec.AgentPath = buildStatic(t, "./cmd/msb-agent", "msbtest_trampolinestop")
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	wctx, c := dialAgent(t, ctx, f.d, spec.ID, 30*time.Second)
	exec := func(argv ...string) (int, string) {
		var out, errb bytes.Buffer
		code, err := c.Exec(wctx, agent.ExecRequest{Argv: argv, Stdout: &out, Stderr: &errb})
		if err != nil {
			t.Errorf("exec %q: %v", argv, err)
		}
		return code, strings.TrimSpace(out.String() + errb.String())
	}

	victim := make(chan string, 1)
	go func() {
		code, out := exec("/stop-in-trampoline")
		victim <- fmt.Sprintf("%q (exit %d)", out, code)
	}()
	code, out := exec("/bin/ptracer", agent.EnterVerb, "/stop-in-trampoline")
	t.Logf("ptrace of a stopped trampoline from inside: %q (exit %d); the trampoline's command then: %s", out, code, <-victim)
	if !strings.HasPrefix(out, "refused: operation not permitted") {
		t.Errorf("ptrace of a trampoline before its PR_SET_DUMPABLE: %q, want refused: operation not permitted", out)
	}
	if code, out := exec("head", "-c", "4", "/.msb/msb-agent"); code == 0 {
		t.Errorf("the sandbox reads the agent binary: %q", out)
	}
	if code, out := exec("echo", "still here"); code != 0 || out != "still here" {
		t.Errorf("exec afterwards: exit %d, %q", code, out)
	}
}
