package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// TestVsockModeBringsLoopbackUp: in a microVM (--vsock-port) the agent is
// root of its own kernel and brings lo up itself before the main command
// runs. Played here as PID 1 of new PID and network namespaces, whose lo
// starts down.
func TestVsockModeBringsLoopbackUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare not found")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("ip not found")
	}
	dir := t.TempDir()
	cfg := agent.Config{Args: []string{"sh", "-c", ip + ` -o link show lo | grep -q "LOOPBACK,UP"`}, Env: []string{"PATH=/usr/bin:/bin"}}
	if err := agent.WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--pid", "--net", "--fork", "--mount-proc", "--kill-child", agenttest.Build(t), "init", "--dir", dir, "--vsock-port", "5067587")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatalf("agent: %v", err)
	}
	var log []byte
	log, _ = os.ReadFile(filepath.Join(dir, agent.LogFile))
	if code, ok, _ := agent.ReadExitCode(dir); !ok {
		t.Skipf("the agent could not serve on vsock here (%v): %s %s", err, out, log)
	} else if code != 0 {
		t.Errorf("lo was not up when the main command ran (exit %d): %s", code, log)
	}
}
