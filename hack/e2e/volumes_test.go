package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// volumeDir is a host directory every sandbox may write to, below a
// directory other users can only traverse; removed after the test.
func volumeDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("/tmp", "msbe2e-vol")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	return base
}

// waitRefused waits until sandbox name is not Ready with reason
// VolumeRefused and returns the condition's message.
func waitRefused(t *testing.T, d *daemon, name string) string {
	t.Helper()
	var msg string
	waitFor(t, 60*time.Second, name+" refused (VolumeRefused)", func() bool {
		status, reason, m := condition(d.sandbox(name), "Ready")
		msg = m
		return status == "False" && reason == "VolumeRefused"
	})
	if phase := field(d.sandbox(name), "status.phase"); phase == "Running" {
		t.Errorf("sandbox %s is Running though its volume was refused", name)
	}
	return msg
}

// One sandbox writes into a shared directory; what it writes (a link where
// a directory was, to /etc or to /) never redirects another sandbox's
// volume: the other is refused with a condition naming the link, also when
// the link appears after it was applied and it starts again (its own
// restart or msbd's). The writer keeps working. A bind mount of the state
// directory elsewhere is refused as a volume.
func TestVolumeLinksNeverFollowed(t *testing.T) {
	d := startDaemon(t)
	base := volumeDir(t)
	shared := filepath.Join(base, "shared")
	sub := filepath.Join(shared, "sub")
	for _, p := range []string{shared, sub} {
		if err := os.Mkdir(p, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, 0o777)
	}
	if err := os.WriteFile(filepath.Join(sub, "mine"), []byte("volume file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostName, _ := os.ReadFile("/etc/hostname")
	vol := func(host, at string, ro bool) string {
		r := "false"
		if ro {
			r = "true"
		}
		return "  volumes: [{hostPath: " + host + ", mountPath: " + at + ", readOnly: " + r + "}]\n"
	}

	d.apply(sandboxYAML("writer", vol(shared, "/w", false), "sleep", "1000"))
	d.apply(sandboxYAML("reader", vol(sub, "/v", true), "sleep", "1000"))
	d.must("wait", "sandbox/writer", "sandbox/reader", "--for=condition=Ready", "--timeout=60s")
	if got := d.must("exec", "reader", "--", "cat", "/v/mine"); got != "volume file\n" {
		t.Fatalf("reader sees %q in its volume", got)
	}

	// The writer swaps sub for a link to /etc.
	d.must("exec", "writer", "--", "sh", "-c", "rm -rf /w/sub && ln -s /etc /w/sub")
	d.apply(sandboxYAML("late", vol(sub, "/v", true), "sleep", "1000"))
	if msg := waitRefused(t, d, "late"); !strings.Contains(msg, sub+" is a symbolic link") {
		t.Errorf("late's condition does not name the link %s: %q", sub, msg)
	}

	// The reader, applied before the swap, starts again: refused too.
	d.apply(sandboxYAML("reader", vol(sub, "/v", true)+"  operatingMode: Suspended\n", "sleep", "1000"))
	waitFor(t, 30*time.Second, "reader Suspended", func() bool { return field(d.sandbox("reader"), "status.phase") == "Suspended" })
	d.apply(sandboxYAML("reader", vol(sub, "/v", true), "sleep", "1000"))
	if msg := waitRefused(t, d, "reader"); !strings.Contains(msg, sub) {
		t.Errorf("reader's condition does not name the link %s: %q", sub, msg)
	}

	// A link to / and a path through it.
	d.must("exec", "writer", "--", "sh", "-c", "rm -f /w/sub && ln -s / /w/sub")
	d.apply(sandboxYAML("root", vol(filepath.Join(sub, "etc"), "/v", true), "sleep", "1000"))
	if msg := waitRefused(t, d, "root"); !strings.Contains(msg, sub+" is a symbolic link") {
		t.Errorf("root's condition does not name the link %s: %q", sub, msg)
	}

	// A state directory bind-mounted elsewhere.
	stateBind := filepath.Join(base, "statebind")
	if err := os.Mkdir(stateBind, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(d.stateDir, stateBind, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(stateBind, syscall.MNT_DETACH) })
	d.apply(sandboxYAML("state", vol(stateBind, "/v", true), "sleep", "1000"))
	if msg := waitRefused(t, d, "state"); !strings.Contains(msg, "state directory") {
		t.Errorf("state's condition does not say it reaches the state directory: %q", msg)
	}

	// msbd restarts: the refused stay refused, the writer runs on.
	d.stop()
	d.start()
	for _, name := range []string{"late", "reader", "root", "state"} {
		waitRefused(t, d, name)
	}
	d.must("wait", "sandbox/writer", "--for=condition=Ready", "--timeout=60s")
	d.must("exec", "writer", "--", "sh", "-c", "echo still > /w/ok")
	if got, _ := os.ReadFile(filepath.Join(shared, "ok")); string(got) != "still\n" {
		t.Errorf("the writer's volume: ok = %q", got)
	}
	// No sandbox saw a host file: nothing refused ever ran, and the host's
	// name is nowhere in what the reader could read.
	for _, name := range []string{"late", "reader", "root", "state"} {
		if out, _, code := d.ctl("exec", name, "--", "cat", "/v/hostname"); code == 0 || (len(hostName) > 0 && strings.Contains(out, strings.TrimSpace(string(hostName)))) {
			t.Errorf("exec in refused sandbox %s: exit %d, %q", name, code, out)
		}
	}
}

// A whole state directory restored from a snapshot taken before a sandbox
// was created (fence and database included, so the fence alone cannot
// tell) keeps that sandbox: its marker is newer than the store. msbd says so
// in its log and in a Warning event `msbctl events` shows, and goes on
// holding after another restart; removing the fence accepts the store.
func TestRestoredStateDirKeepsNewerSandboxes(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("old", "", "sleep", "1000"))
	d.must("wait", "sandbox/old", "--for=condition=Ready", "--timeout=60s")
	d.stop()
	snap := filepath.Join(t.TempDir(), "snap.tar")
	// What is mounted below the state dir (sandboxes' root filesystems,
	// sysfs, namespace files) is not the state dir's own, nor are the
	// caches msbd remakes (disk templates, the ready disks of its pool, the agent's exec-only copies,
	// which running sandboxes execute: a restore over them fails busy).
	mustRun(t, "tar", "--one-file-system", "--exclude=./netns", "--exclude=./sandboxes/*/sys", "--exclude=./sandboxes/*/userns", "--exclude=./sandboxes/*/disk.img", "--exclude=./disk-templates", "--exclude=./disk-pool", "--exclude=./agent-bin", "-C", d.stateDir, "-cf", snap, ".")
	// Should the test fail half-way, the store is accepted so that the
	// daemon's cleanup (which runs after this) removes every sandbox.
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.stop()
		}
		os.Remove(filepath.Join(d.stateDir, "store-fence.json"))
	})
	d.start()
	d.apply(sandboxYAML("new", "", "sleep", "1000"))
	d.must("wait", "sandbox/new", "--for=condition=Ready", "--timeout=60s")
	newUID := field(d.sandbox("new"), "metadata.uid").(string)
	newPID := int(field(d.sandbox("new"), "status.pid").(float64))
	d.stop()

	mustRun(t, "tar", "--overwrite", "-C", d.stateDir, "-xf", snap) // the restore
	for restart := range 2 {
		d.start()
		d.must("wait", "sandbox/old", "--for=condition=Ready", "--timeout=60s")
		if _, _, code := d.ctl("get", "sandbox", "new"); code == 0 {
			t.Fatal("the restored store knows sandbox new")
		}
		if _, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", newUID)); err != nil {
			t.Fatalf("restart %d: the sandbox newer than the restored state was removed: %v", restart, err)
		}
		if !processExists(newPID) {
			t.Fatalf("restart %d: the sandbox newer than the restored state was stopped", restart)
		}
		if log := d.logBuf.String(); !strings.Contains(log, "restored from a backup") || !strings.Contains(log, "store-fence.json") {
			t.Errorf("restart %d: msbd did not say why it keeps the sandbox and how to accept the store:\n%s", restart, log)
		}
		if info := d.must("info"); !strings.Contains(info, "kept") || !strings.Contains(info, "restored from a backup") {
			t.Errorf("restart %d: msbctl info does not report the hold:\n%s", restart, info)
		}
		events := d.must("events")
		if !strings.Contains(events, "OrphanKept") || !strings.Contains(events, "restored from a backup") || !strings.Contains(events, "new") {
			t.Errorf("restart %d: msbctl events does not report the kept sandbox:\n%s", restart, events)
		}
		d.stop()
	}

	// The operator accepts the restored state: the newer sandbox goes.
	if err := os.Remove(filepath.Join(d.stateDir, "store-fence.json")); err != nil {
		t.Fatal(err)
	}
	d.start()
	waitFor(t, 30*time.Second, "the orphan removed", func() bool {
		_, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", newUID))
		return os.IsNotExist(err)
	})
}
