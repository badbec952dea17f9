package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/images"
	"msb.dev/msb/images/imagetest"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// TestRealAgent runs cmd/msb-agent (built here) as the sandbox's init: the
// contract of config.json, log and exit-code end to end.
func TestRealAgent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("echo hello from $(id -u) on $(hostname); exit 5")
	spec.AgentPath = agenttest.Build(t)
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st := waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 15*time.Second)
	logs, _ := os.ReadFile(filepath.Join(f.d.agentDir(spec.ID), "log"))
	if !st.Exited || st.ExitCode != 5 {
		t.Errorf("State = %+v, want exit code 5; log %q", st, logs)
	}
	if !strings.Contains(string(logs), "hello from 0 on sbx") {
		t.Errorf("log = %q", logs)
	}
}

// TestHostUsersLockedOut (finding #2): while a sandbox runs and execs work,
// an unprivileged host user reaches none of its files (writable layer, agent
// socket, mounted rootfs) nor the image layers, and cannot run the image's
// setuid program, which stays setuid inside the sandbox.
func TestHostUsersLockedOut(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A setuid-root program in the image (chown clears the bit, so it is set last).
	suid := filepath.Join(f.layers[0], "bin", "suid-busybox")
	copyFile(t, "/bin/busybox", suid, 0o755)
	must(t, os.Chown(suid, mappedID, mappedID))
	must(t, unix.Chmod(suid, 0o4755))

	spec := f.spec("exec sleep 1000")
	spec.AgentPath = agenttest.Build(t)
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	wctx, c := dialAgent(t, ctx, f.d, spec.ID, 15*time.Second)
	run := func(argv ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code, err := c.Exec(wctx, agent.ExecRequest{Argv: argv, Stdout: &out, Stderr: &errb})
		if err != nil || code != 0 || errb.Len() > 0 {
			t.Fatalf("exec %q: code %d, %v: %s", argv, code, err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	run("sh", "-c", "echo secret > /root/written")
	if got := run("cat", "/etc/motd"); got != "layer1" {
		t.Errorf("/etc/motd in the sandbox = %q", got)
	}
	if got := run("stat", "-c", "%a %u", "/bin/suid-busybox"); got != "4755 0" {
		t.Errorf("setuid program in the sandbox: mode and owner %q, want 4755 0 (suid kept)", got)
	}

	sbx := f.d.SandboxDir(spec.ID)
	ids := f.ids(spec.ID)
	checkOwnerMode(t, sbx, 0, ids.GID, 0o710)
	upper := filepath.Join(sbx, "upper")
	if _, err := os.Stat(filepath.Join(upper, "root/written")); err != nil {
		t.Fatalf("the sandbox's write is not in its writable layer: %v", err)
	}
	// asUser runs busybox with args as uid:gid, no supplementary groups.
	asUser := func(uid, gid uint32, args ...string) (string, error) {
		cmd := exec.Command("/bin/busybox", args...)
		if strings.HasPrefix(args[0], "/") {
			cmd = exec.Command(args[0], args[1:]...)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	const nobody = 65534
	if out, err := asUser(nobody, nobody, "stat", "/bin/busybox"); err != nil {
		t.Fatalf("the probe itself fails as nobody: %v: %s", err, out)
	}
	for _, p := range []string{
		upper,
		filepath.Join(upper, "root/written"),
		filepath.Join(f.d.agentDir(spec.ID), agent.SocketFile),
		filepath.Join(sbx, "rootfs/bin/busybox"),
		filepath.Join(sbx, "rootfs/bin/suid-busybox"),
		filepath.Join(sbx, "spec.json"),
		f.layers[0],
		filepath.Join(f.layers[0], "bin/busybox"),
		suid,
		filepath.Join(f.state, "runc", spec.ID),
	} {
		for _, cmd := range [][]string{{"stat", p}, {"ls", "-l", p}} {
			out, err := asUser(nobody, nobody, cmd...)
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("as nobody, %q: %v %q, want permission denied", cmd, err, out)
			}
		}
	}
	for _, p := range []string{f.state, filepath.Join(f.state, "sandboxes"), sbx, filepath.Dir(f.layers[0])} {
		if out, err := asUser(nobody, nobody, "ls", p); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("as nobody, ls %s: %v %q, want permission denied", p, err, out)
		}
	}
	if out, err := asUser(nobody, nobody, filepath.Join(sbx, "rootfs/bin/suid-busybox"), "id"); err == nil || !errors.Is(err, os.ErrPermission) {
		t.Errorf("as nobody, running the image's setuid program: %v %q, want permission denied", err, out)
	}
	// The sandbox's root (what runc runs as to mount the rootfs) does get
	// through: its group may search its directory down to the rootfs mount
	// point (the overlay is mounted in each start's own namespace), but
	// none may list the sandboxes.
	if out, err := asUser(ids.UID, ids.GID, "stat", filepath.Join(sbx, "rootfs")); err != nil {
		t.Errorf("as the sandbox's root, stat of the rootfs: %v %q", err, out)
	}
	if out, err := asUser(ids.UID, ids.GID, "ls", filepath.Join(f.state, "sandboxes")); err == nil {
		t.Errorf("as the sandbox's root, ls sandboxes/ worked: %q", out)
	}
	for _, id := range []uint32{mappedID, ids.UID, ids.UID + SlotSize} {
		if out, err := asUser(id, id, "stat", filepath.Join(f.layers[0], "bin/busybox")); err == nil {
			t.Errorf("as uid %d, image layer reachable outside the sandbox: %q", id, out)
		}
	}
	// Nor may another sandbox's root (the next range, or the shared one).
	for _, id := range []uint32{mappedID, ids.UID + SlotSize} {
		if out, err := asUser(id, id, "stat", filepath.Join(sbx, "rootfs/bin/busybox")); err == nil {
			t.Errorf("as uid %d, another sandbox's rootfs is reachable: %q", id, out)
		}
	}
	// Still serving after all that.
	if got := run("cat", "/root/written"); got != "secret" {
		t.Errorf("read back in the sandbox: %q", got)
	}
}

// TestDirModes: New creates the state dir's directories with the modes of
// Driver.lockDown (StateDir and sandboxes/ searchable by every sandbox's
// own uid, listable by none; a sandbox directory only by its own group).
func TestDirModes(t *testing.T) {
	requireRunc(t)
	base := tempDir(t)
	state := filepath.Join(base, "state")
	old := filepath.Join(state, "sandboxes", "old-sandbox")
	for _, d := range []string{filepath.Join(state, "runc"), old} {
		must(t, os.MkdirAll(d, 0o711))
	}
	must(t, os.Chmod(state, 0o751))
	must(t, os.Chmod(filepath.Join(state, "sandboxes"), 0o711))
	must(t, os.Chmod(old, 0o711))
	fresh := filepath.Join(base, "fresh")
	for _, dir := range []string{state, fresh} {
		_, err := New(Options{StateDir: dir})
		must(t, err)
		for _, c := range []struct {
			path     string
			uid, gid uint32
			mode     uint32
		}{
			{dir, 0, mappedID, 0o711},
			{filepath.Join(dir, "sandboxes"), 0, 0, 0o711},
			{filepath.Join(dir, "runc"), 0, 0, 0o700},
		} {
			checkOwnerMode(t, c.path, c.uid, c.gid, c.mode)
		}
		if dir == state {
			checkOwnerMode(t, old, 0, mappedID, 0o710)
		}
	}
}

func checkOwnerMode(t *testing.T, path string, uid, gid, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	if st.Uid != uid || st.Gid != gid || st.Mode&0o7777 != mode {
		t.Errorf("%s: %d:%d %o, want %d:%d %o", path, st.Uid, st.Gid, st.Mode&0o7777, uid, gid, mode)
	}
}

// TestImageStoreLayers runs a sandbox as msbd does: layers unpacked by the
// images package (ids DefaultHostID+x) in StateDir/images, whose directories
// are 0700 root, stacked by the driver on the same StateDir.
func TestImageStoreLayers(t *testing.T) {
	requireRunc(t)
	bb, err := imagetest.BusyboxImage()
	if err != nil {
		t.Skip(err)
	}
	base := tempDir(t)
	layout := filepath.Join(base, "layout")
	must(t, imagetest.WriteOCILayout(layout, bb, "latest"))
	state := filepath.Join(base, "state")
	d, err := New(Options{StateDir: state})
	must(t, err)
	store, err := images.New(filepath.Join(state, "images"), images.WithIDMap(DefaultHostID, DefaultHostID, SlotSize))
	must(t, err)
	img, err := store.Get(context.Background(), "oci:"+layout+":latest")
	must(t, err)
	f := &fixture{t: t, base: base, state: state, d: d, layers: img.Layers}
	ctx := context.Background()
	spec := f.spec("id -u > /.msb/uid; stat -c '%u %a' /bin/busybox /root > /.msb/stat; echo x > /root/new")
	must(t, d.Create(ctx, spec))
	must(t, d.Start(ctx, spec.ID))
	st := waitStatus(t, d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	agentDir := d.agentDir(spec.ID)
	if !st.Exited || st.ExitCode != 0 {
		logs, _ := os.ReadFile(filepath.Join(agentDir, "log"))
		t.Fatalf("State = %+v; log %q", st, logs)
	}
	if got, _ := os.ReadFile(filepath.Join(agentDir, "stat")); string(got) != "0 755\n0 700\n" {
		t.Errorf("owners and modes in the sandbox: %q", got)
	}
	var sb unix.Stat_t
	must(t, unix.Stat(filepath.Join(d.SandboxDir(spec.ID), "upper/root/new"), &sb))
	if ids := f.ids(spec.ID); sb.Uid != ids.UID || sb.Gid != ids.GID || ids.Shared {
		t.Errorf("upper/root/new owned by %d:%d", sb.Uid, sb.Gid)
	}
}
