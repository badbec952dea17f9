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

// waitPoolReady waits until p holds n ready disks (state, not speed: the
// deadline only ends a test that would hang).
func waitPoolReady(t *testing.T, p *diskPool, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p.mu.Lock()
		got, failed := len(p.ready), p.failed
		p.mu.Unlock()
		if got == n {
			return
		}
		if failed || time.Now().After(deadline) {
			t.Fatalf("disk pool: %d ready (failed %v), want %d", got, failed, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDiskPool: a sandbox of the pooled size gets a ready disk (its image
// moves into the sandbox directory, its filesystem is mounted there) that
// bounds it like one made at its start; the pool refills; a sandbox of
// another size makes its own; a new driver on the state dir removes the
// images an old one left.
func TestDiskPool(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const size = 32 << 20
	d, err := New(Options{StateDir: f.state, PooledDiskBytes: size})
	must(t, err)
	t.Cleanup(d.diskPool.close)
	f.d = d
	waitPoolReady(t, d.diskPool, diskPoolReady)
	pooled := d.diskPool.ready[len(d.diskPool.ready)-1].img

	spec := f.spec(`err=$(dd if=/dev/zero of=/root/big bs=1M 2>&1); rm -f /root/big; echo "$err" > /.msb/dd-err; exit 3`)
	spec.DiskBytes = size
	must(t, d.Create(ctx, spec))
	if _, err := os.Stat(pooled); !os.IsNotExist(err) {
		t.Errorf("the pooled image %s is still in the pool (%v): the start made its own disk", pooled, err)
	}
	must(t, d.Start(ctx, spec.ID))
	waitStatus(t, d, spec.ID, vmdriver.StatusStopped, 20*time.Second)
	if got, _ := os.ReadFile(filepath.Join(d.agentDir(spec.ID), "dd-err")); !strings.Contains(string(got), "No space left on device") {
		t.Errorf("dd past the pooled disk's size: %q, want ENOSPC", got)
	}
	if used, limit, ok := d.DiskUsage(spec.ID); !ok || limit != size || used <= 0 {
		t.Errorf("DiskUsage = %d, %d, %v", used, limit, ok)
	}
	if l := loopBackedBy(d.SandboxDir(spec.ID)); len(l) != 1 {
		t.Errorf("loop devices backed by the sandbox's disk: %v, want one", l)
	}
	waitPoolReady(t, d.diskPool, diskPoolReady)

	other := f.spec("true")
	other.DiskBytes = 2 * size
	must(t, d.Create(ctx, other))
	if got := len(d.diskPool.ready); got != diskPoolReady {
		t.Errorf("a sandbox of another size took a pooled disk: %d ready", got)
	}
	if used, limit, ok := d.DiskUsage(other.ID); !ok || limit != 2*size || used <= 0 {
		t.Errorf("DiskUsage of the other = %d, %d, %v", used, limit, ok)
	}

	must(t, d.Delete(ctx, spec.ID, true))
	if l := loopsGone(d.SandboxDir(spec.ID)); len(l) > 0 {
		t.Errorf("loop devices left after purge: %v", l)
	}

	// An msbd that ended left its pool's images: the next one removes them.
	poolDir := filepath.Join(f.state, "disk-pool")
	d.diskPool.close()
	must(t, os.WriteFile(filepath.Join(poolDir, "left.img"), nil, 0o600))
	d2, err := New(Options{StateDir: f.state, PooledDiskBytes: size})
	must(t, err)
	t.Cleanup(d2.diskPool.close)
	if _, err := os.Stat(filepath.Join(poolDir, "left.img")); !os.IsNotExist(err) {
		t.Errorf("an earlier pool's image is still there: %v", err)
	}
	waitPoolReady(t, d2.diskPool, diskPoolReady)
	if l := loopBackedBy(poolDir); len(l) != diskPoolReady {
		t.Errorf("loop devices of the pool: %d, want %d", len(l), diskPoolReady)
	}
}
