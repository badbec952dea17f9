package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// mappedID is the default host id of the sandboxes' root: every real-runc
// test runs with it.
const mappedID = DefaultHostID

// skipReason is why the real-runc tests cannot run here ("" when they can).
var (
	skipReason string
	agentBin   string // the test agent, built in TestMain
)

func TestMain(m *testing.M) {
	code := testMain(m)
	agenttest.Cleanup()
	os.Exit(code)
}

func testMain(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipReason = "container driver tests need root (runc, overlay, cgroups)"
	case lookRunc() == "":
		skipReason = "runc not found in PATH (apt-get install runc)"
	case !fileExists("/bin/busybox"):
		skipReason = "/bin/busybox not found (apt-get install busybox-static)"
	}
	if skipReason != "" {
		fmt.Println("SKIP container driver tests:", skipReason)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "msbtest-agent-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // the sandbox's root (an unmapped host id) must reach the binary
	agentBin = filepath.Join(dir, "msb-agent")
	cmd := exec.Command("go", "build", "-o", agentBin, "./testdata/testagent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("build test agent: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func lookRunc() string {
	p, _ := exec.LookPath("runc")
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func requireRunc(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// tempDir is a directory every mapped id can traverse (t.TempDir is 0700),
// removed at the end of the test.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "msbtest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mps, _ := mountPoints(dir); len(mps) > 0 {
			t.Errorf("still mounted under %s: %v", dir, mps)
			unmountAll(dir)
		}
		os.RemoveAll(dir)
	})
	return dir
}

// busyboxLayers builds a two-layer busybox image under base/images/layers,
// owned by the mapped id range and in 0700 root directories as the images
// package leaves it.
func busyboxLayers(t testing.TB, base string) []string {
	t.Helper()
	store := filepath.Join(base, "images", "layers")
	must(t, os.MkdirAll(store, 0o700))
	must(t, os.Chmod(filepath.Dir(store), 0o700))
	l0, l1 := filepath.Join(store, "layer0"), filepath.Join(store, "layer1")
	for _, d := range []string{"bin", "etc", "tmp", "root", "usr/bin"} {
		must(t, os.MkdirAll(filepath.Join(l0, d), 0o755))
	}
	must(t, os.Chmod(filepath.Join(l0, "tmp"), 0o1777))
	copyFile(t, "/bin/busybox", filepath.Join(l0, "bin/busybox"), 0o755)
	for _, name := range []string{"sh", "cat", "echo", "sleep", "ls", "id", "touch", "test", "grep", "hostname", "mount", "ip", "wc", "stat", "true", "false", "rm", "mkdir"} {
		must(t, os.Symlink("busybox", filepath.Join(l0, "bin", name)))
	}
	must(t, os.WriteFile(filepath.Join(l0, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(l0, "etc/group"), []byte("root:x:0:\ntty:x:5:\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(l0, "etc/motd"), []byte("layer0\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(l1, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(l1, "etc/motd"), []byte("layer1\n"), 0o644))
	for _, l := range []string{l0, l1} {
		must(t, filepath.Walk(l, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, mappedID, mappedID)
		}))
	}
	return []string{l0, l1}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// fixture is a driver on a fresh state dir with a busybox image.
type fixture struct {
	t      testing.TB
	base   string
	state  string
	d      *Driver
	layers []string
}

// ids is the host id range recorded for sandbox id.
func (f *fixture) ids(id string) sandboxIDs {
	f.t.Helper()
	ids, ok, err := readIDs(f.d.SandboxDir(id))
	if err != nil || !ok {
		f.t.Fatalf("sandbox %s: no id record: %v", id, err)
	}
	return ids
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	requireRunc(t)
	base := tempDir(t)
	f := &fixture{t: t, base: base, state: filepath.Join(base, "state")}
	f.layers = busyboxLayers(t, base)
	d, err := New(Options{StateDir: f.state})
	must(t, err)
	f.d = d
	return f
}

// spec is a busybox sandbox running sh -c script; Delete(purge) at cleanup.
func (f *fixture) spec(script string) vmdriver.Spec {
	id := randomID()
	f.t.Cleanup(func() {
		if err := f.d.Delete(context.Background(), id, true); err != nil {
			f.t.Errorf("cleanup delete %s: %v", id, err)
		}
	})
	return vmdriver.Spec{
		ID:          id,
		Hostname:    "sbx",
		Layers:      f.layers,
		AgentPath:   agentBin,
		Args:        []string{"sh", "-c", script},
		Env:         []string{"PATH=/bin:/usr/bin", "HOME=/root"},
		MemoryBytes: 64 << 20,
		MilliCPUs:   500,
		PIDs:        64,
	}
}

// waitFor polls until path exists and returns its content.
func waitFor(t testing.TB, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "log"))
			aerr, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "agent-error"))
			t.Fatalf("%s did not appear within %v; agent log: %q agent error: %q", path, timeout, logs, aerr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitStatus(t testing.TB, d *Driver, id string, status vmdriver.Status, timeout time.Duration) vmdriver.State {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.State(context.Background(), id)
		if err == nil && st.Status == status {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: status %q (err %v), want %q", id, st.Status, err, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func statusField(status, key string) string {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// dialAgent waits (at most timeout) until sandbox id's agent is ready and
// connects to it; the returned context ends with that timeout. Both are
// released at the end of the test.
func dialAgent(t *testing.T, ctx context.Context, d *Driver, id string, timeout time.Duration) (context.Context, *agent.Client) {
	t.Helper()
	agentDir := d.agentDir(id)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancel)
	if err := agent.WaitReady(wctx, agentDir); err != nil {
		logs, _ := os.ReadFile(filepath.Join(agentDir, "log"))
		t.Fatalf("agent not ready: %v; log %q", err, logs)
	}
	c, err := agent.Dial(wctx, filepath.Join(agentDir, agent.SocketFile))
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return wctx, c
}
