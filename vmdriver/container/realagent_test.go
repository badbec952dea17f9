package container

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealAgent runs cmd/msb-agent (built here) as the sandbox's init: the
// contract of config.json, log and exit-code end to end.
func TestRealAgent(t *testing.T) {
	f := newFixture(t)
	bin := filepath.Join(f.base, "msb-agent")
	cmd := exec.Command("go", "build", "-o", bin, "msb.dev/msb/cmd/msb-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cmd/msb-agent does not build yet: %v\n%s", err, out)
	}
	ctx := context.Background()
	spec := f.spec("echo hello from $(id -u) on $(hostname); exit 5")
	spec.AgentPath = bin
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st := waitStatus(t, f.d, spec.ID, "stopped", 15*time.Second)
	logs, _ := os.ReadFile(filepath.Join(f.d.AgentDir(spec.ID), "log"))
	if !st.Exited || st.ExitCode != 5 {
		t.Errorf("State = %+v, want exit code 5; log %q", st, logs)
	}
	if !strings.Contains(string(logs), "hello from 0 on sbx") {
		t.Errorf("log = %q", logs)
	}
}
