package main

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// TestMain removes the agent agenttest built (static, no cgo: the way it ships).
func TestMain(m *testing.M) {
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

func TestStatic(t *testing.T) {
	f, err := elf.Open(agenttest.Build(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("msb-agent has an ELF interpreter: it must be static to run in any image")
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"serve"}, {"init", "--bogus"}} {
		var stderr bytes.Buffer
		cmd := exec.Command(agenttest.Build(t), args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(stderr.String(), "usage: msb-agent init") {
			t.Errorf("msb-agent %v: %v, stderr %q; want exit 2 and usage", args, err, stderr.String())
		}
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, agent.ConfigFile), []byte("{"), 0o600)
	cmd := exec.Command(agenttest.Build(t), "init", "--dir", dir)
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != agent.ExitAgentError {
		t.Errorf("exit %d, want %d", code, agent.ExitAgentError)
	}
	if _, ok, _ := agent.ReadExitCode(dir); ok {
		t.Error("exit-code written although the main command never ran")
	}
	var log bytes.Buffer
	agent.ReadLog(dir, &log)
	if !strings.Contains(log.String(), "config.json") {
		t.Errorf("log %q does not say what was wrong", log.String())
	}
}

// TestAsPID1 runs the agent as the real PID 1 of new PID and UTS namespaces, as in a
// container: hostname, exec, and at exit kill(-1) of everything left behind.
func TestAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create PID namespaces")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare not found")
	}
	dir := t.TempDir()
	cfg := agent.Config{
		Args:     []string{"sh", "-c", "read x < " + filepath.Join(dir, "go") + "; sh -c 'trap \"\" TERM; sleep 100' & (sleep 100 &); sleep 0.1; exit 4"},
		Env:      []string{"PATH=/usr/bin:/bin"},
		Hostname: "sandbox-1",
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "go"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--pid", "--uts", "--fork", "--mount-proc", "--kill-child", agenttest.Build(t), "init", "--dir", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := agent.WaitReady(ctx, dir); err != nil {
		t.Fatal(err)
	}
	c, err := agent.Dial(ctx, filepath.Join(dir, agent.SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	code, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "echo $$ $PPID; cat /proc/sys/kernel/hostname"}, Stdout: &out})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d, %v", code, err)
	}
	if f := strings.Fields(out.String()); len(f) != 3 || f[1] != "1" || f[2] != "sandbox-1" {
		t.Errorf("exec output %q: want a child of PID 1 on host sandbox-1", out.String())
	}
	os.WriteFile(filepath.Join(dir, "go"), []byte("\n"), 0o600) // let the main command go on
	start := time.Now()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 4 {
		t.Errorf("exit %d, want 4", code)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("exit took %v: leftovers were not killed in time", d)
	}
	if code, ok, _ := agent.ReadExitCode(dir); !ok || code != 4 {
		t.Errorf("exit-code %d %v, want 4", code, ok)
	}
}
