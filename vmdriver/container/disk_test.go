package container

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
)

// loopsGone waits until no loop device's backing file lies under dir and
// returns those still there after a while: a loop device detaches
// (autoclear) shortly after the last mount of its filesystem goes, which
// may be a stopped sandbox's mount namespace going away.
func loopsGone(dir string) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := loopBackedBy(dir)
		if len(l) == 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loopBackedBy lists the loop devices whose backing file lies under dir.
func loopBackedBy(dir string) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			out = append(out, f)
		}
	}
	return out
}

// TestDiskLimit: a sandbox with DiskBytes writes until ENOSPC inside its
// own filesystem; the disk (and the agent directory on it, with the exit
// code) stays across a stop, and goes with a purge.
func TestDiskLimit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec(`err=$(dd if=/dev/zero of=/root/big bs=1M 2>&1); rm -f /root/big; echo "$err" > /.msb/dd-err; exit 3`)
	spec.DiskBytes = 32 << 20
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st := waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 20*time.Second)
	agentDir := f.d.agentDir(spec.ID)
	if got, _ := os.ReadFile(filepath.Join(agentDir, "dd-err")); !strings.Contains(string(got), "No space left on device") {
		t.Errorf("dd past the limit: %q, want ENOSPC", got)
	}
	if !st.Exited || st.ExitCode != 3 {
		t.Errorf("State = %+v, want exited 3", st)
	}
	used, limit, ok := f.d.DiskUsage(spec.ID)
	if !ok || limit != 32<<20 || used <= 0 || used >= limit {
		t.Errorf("DiskUsage = %d, %d, %v", used, limit, ok)
	}
	if len(loopBackedBy(f.d.SandboxDir(spec.ID))) != 1 {
		t.Errorf("loop devices of the sandbox: %v, want one", loopBackedBy(f.d.SandboxDir(spec.ID)))
	}

	// A stop keeps the disk: the exit code and what is in /.msb stay readable.
	must(t, f.d.Delete(ctx, spec.ID, false))
	if ok, _ := isMountPoint(f.d.diskDir(spec.ID)); !ok {
		t.Errorf("the disk was unmounted by Delete(purge=false)")
	}
	if ok, _ := isMountPoint(f.d.rootfsDir(spec.ID)); ok {
		t.Errorf("the rootfs is still mounted after Delete(purge=false)")
	}
	if st, err := f.d.State(ctx, spec.ID); err != nil || !st.Exited || st.ExitCode != 3 {
		t.Errorf("after Delete(purge=false): %+v, %v", st, err)
	}
	// And a start uses it again.
	must(t, f.d.Start(ctx, spec.ID))
	waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 20*time.Second)
	if got, _ := os.ReadFile(filepath.Join(agentDir, "dd-err")); !strings.Contains(string(got), "No space left on device") {
		t.Errorf("second run: %q", got)
	}

	must(t, f.d.Delete(ctx, spec.ID, true))
	if l := loopsGone(f.d.SandboxDir(spec.ID)); len(l) > 0 {
		t.Errorf("loop devices left after purge: %v", l)
	}
	assertGone(t, f.d, spec.ID)
}
