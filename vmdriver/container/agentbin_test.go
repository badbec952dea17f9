package container

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExecOnlyAgentCopy: the copy is root's, mode 0711, the same bytes,
// named by its content (the same source gives the same file, a changed
// one a new file and leaves the old in place for sandboxes made with it).
func TestExecOnlyAgentCopy(t *testing.T) {
	state := tempDir(t)
	src := filepath.Join(tempDir(t), "msb-agent")
	must(t, os.WriteFile(src, []byte("#!agent v1\n"), 0o755))
	p1, err := execOnlyAgent(state, src)
	must(t, err)
	fi, err := os.Stat(p1)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o711 || st.Uid != 0 || !strings.HasPrefix(p1, filepath.Join(state, agentBinDir)+"/msb-agent-") {
		t.Errorf("copy %s: mode %v uid %d, want 0711 owned by root under %s", p1, fi.Mode().Perm(), st.Uid, agentBinDir)
	}
	if b, _ := os.ReadFile(p1); !bytes.Equal(b, []byte("#!agent v1\n")) {
		t.Errorf("copy holds %q", b)
	}
	if again, err := execOnlyAgent(state, src); err != nil || again != p1 {
		t.Errorf("second call: %q, %v; want %q", again, err, p1)
	}
	// Removed behind the cache's back: made again.
	must(t, os.Remove(p1))
	if again, err := execOnlyAgent(state, src); err != nil || again != p1 || !fileExists(p1) {
		t.Errorf("after removal: %q, %v, exists %v", again, err, fileExists(p1))
	}
	// A new agent (replaced by rename, as installs do): a new copy.
	tmp := src + ".new"
	must(t, os.WriteFile(tmp, []byte("#!agent v2\n"), 0o755))
	future := time.Now().Add(time.Minute)
	must(t, os.Chtimes(tmp, future, future))
	must(t, os.Rename(tmp, src))
	p2, err := execOnlyAgent(state, src)
	must(t, err)
	if p2 == p1 || !fileExists(p1) {
		t.Errorf("after an upgrade: %q (old %q, still there: %v)", p2, p1, fileExists(p1))
	}
	if entries, _ := os.ReadDir(filepath.Join(state, agentBinDir)); len(entries) != 2 {
		t.Errorf("%s holds %d entries, want the two copies and no temporary file", agentBinDir, len(entries))
	}
}

// BenchmarkExecOnlyAgent: what a sandbox's Create pays for the copy, once
// per agent binary and msbd (cold), then per sandbox (warm).
func BenchmarkExecOnlyAgent(b *testing.B) {
	src := agentBin
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			state := b.TempDir()
			if _, err := execOnlyAgent(state, src); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		state := b.TempDir()
		for b.Loop() {
			if _, err := execOnlyAgent(state, src); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestExecOnlyAgentNoexecStateDir: a state directory on a noexec mount is
// a clear error, not a sandbox that cannot start its agent.
func TestExecOnlyAgentNoexecStateDir(t *testing.T) {
	state := tempDir(t)
	if err := unix.Mount("tmpfs", state, "tmpfs", unix.MS_NOEXEC, "size=16m"); err != nil {
		t.Skipf("mount a noexec tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(state, unix.MNT_DETACH) })
	src := filepath.Join(tempDir(t), "msb-agent")
	must(t, os.WriteFile(src, []byte("#!agent\n"), 0o755))
	if _, err := execOnlyAgent(state, src); err == nil || !strings.Contains(err.Error(), "noexec") {
		t.Errorf("execOnlyAgent on a noexec state dir: %v, want an error naming noexec", err)
	}
}
