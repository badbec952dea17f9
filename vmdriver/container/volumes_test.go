package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// A read-write volume other host users can enter is warned about; a closed
// or read-only one is not.
func TestVolumeWarnings(t *testing.T) {
	open, closed, ro := t.TempDir(), t.TempDir(), t.TempDir()
	for dir, mode := range map[string]os.FileMode{open: 0o755, closed: 0o700, ro: 0o755} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	d := &Driver{}
	got := d.VolumeWarnings(vmdriver.Spec{Mounts: []vmdriver.Mount{
		{HostPath: open, Path: "/open"},
		{HostPath: closed, Path: "/closed"},
		{HostPath: ro, Path: "/ro", ReadOnly: true},
	}})
	if len(got) != 1 || !strings.Contains(got[0], open) || !strings.Contains(got[0], "/open") {
		t.Fatalf("warnings %q, want one about %s", got, open)
	}
}

// bindMount bind-mounts src at dst (created) for the rest of the test.
func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(dst, 0o700))
	must(t, unix.Mount(src, dst, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
}

// The walker and openat2 agree: a link in any component, the last one
// included, is refused with its name; a path without one opens as the file
// it names.
func TestOpenHostPathRefusesLinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	must(t, os.MkdirAll(filepath.Join(real, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(real, "sub", "f"), []byte("x"), 0o644))
	must(t, os.Symlink("real", filepath.Join(base, "rel")))
	must(t, os.Symlink("/etc", filepath.Join(real, "etc")))
	must(t, os.Symlink("/", filepath.Join(real, "root")))
	must(t, os.Symlink(filepath.Join(real, "sub", "f"), filepath.Join(real, "flink")))

	openers := map[string]func(string) (*hostPathFD, error){
		"openHostPath": openHostPath,
		"walk":         walkHostPath,
	}
	for name, open := range openers {
		for _, c := range []struct{ path, link string }{
			{filepath.Join(base, "rel", "sub"), filepath.Join(base, "rel")},
			{filepath.Join(real, "etc"), filepath.Join(real, "etc")},
			{filepath.Join(real, "etc", "hostname"), filepath.Join(real, "etc")},
			{filepath.Join(real, "root"), filepath.Join(real, "root")},
			{filepath.Join(real, "root", "etc"), filepath.Join(real, "root")},
			{filepath.Join(real, "flink"), filepath.Join(real, "flink")},
			{"/proc/self/root", "/proc/self"},
			{"/proc/1/root", "/proc/1/root"}, // a magic link
			{"/proc/1/cwd/etc", "/proc/1/cwd"},
		} {
			h, err := open(c.path)
			if err == nil {
				h.Close()
				t.Errorf("%s(%s) opened it, want refused", name, c.path)
				continue
			}
			var le *LinkError
			if !errors.As(err, &le) || le.Component != c.link || !errors.Is(err, ErrLinkInHostPath) {
				t.Errorf("%s(%s) = %v, want a LinkError naming %s", name, c.path, err, c.link)
			}
			if !strings.Contains(err.Error(), c.link) {
				t.Errorf("%s(%s): message %q does not name %s", name, c.path, err, c.link)
			}
		}
		for _, p := range []string{real, filepath.Join(real, "sub"), filepath.Join(real, "sub", "f"), "/"} {
			h, err := open(p)
			if err != nil {
				t.Errorf("%s(%s) = %v", name, p, err)
				continue
			}
			want, _ := os.Stat(p)
			got, _ := fdFileID(h.Leaf)
			st := want.Sys().(*syscall.Stat_t)
			if got != (fileID{uint64(st.Dev), st.Ino}) {
				t.Errorf("%s(%s) opened another file", name, p)
			}
			parent, _ := os.Stat(filepath.Dir(p))
			pst := parent.Sys().(*syscall.Stat_t)
			if got, _ := fdFileID(h.Parent); got != (fileID{uint64(pst.Dev), pst.Ino}) {
				t.Errorf("%s(%s): parent is another directory", name, p)
			}
			h.Close()
		}
		if h, err := open(filepath.Join(real, "missing")); err == nil || !errors.Is(err, os.ErrNotExist) {
			if h != nil {
				h.Close()
			}
			t.Errorf("%s of a missing path = %v, want not exist", name, err)
		}
	}
	for _, p := range []string{real + "/sub/..", real + "/./sub", "relative/path"} {
		if h, err := openHostPath(p); err == nil {
			h.Close()
			t.Errorf("openHostPath(%q) opened it, want refused", p)
		}
	}
}

// A volume can never hand a sandbox msbd's state directory (the other
// sandboxes' writable layers and agent sockets, the shared image layers):
// not the directory, a path inside it, a path containing it, nor the same
// directories reached through bind mounts elsewhere; known by identity, not
// by name.
func TestVolumesCannotExposeStateDir(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sandboxes := filepath.Join(f.state, "sandboxes")
	elsewhere := tempDir(t)
	bindState, bindSandboxes := filepath.Join(elsewhere, "state"), filepath.Join(elsewhere, "sandboxes")
	bindMount(t, f.state, bindState)
	bindMount(t, sandboxes, bindSandboxes)
	must(t, os.WriteFile(filepath.Join(f.state, "afile"), nil, 0o600))

	// A sandbox's writable layer is below the state dir (its overlay is
	// mounted only in its starts' own namespaces).
	other := f.spec("sleep 100")
	must(t, f.d.Create(ctx, other))
	upper, _ := f.d.writableLayer(other.ID)
	must(t, os.Mkdir(filepath.Join(upper, "etc"), 0o755))
	bindRootfs := filepath.Join(elsewhere, "rootfs")
	bindMount(t, upper, bindRootfs)

	for _, host := range []string{
		f.state, sandboxes, filepath.Join(f.state, "afile"), "/", filepath.Dir(f.state),
		bindState, filepath.Join(bindState, "sandboxes"), bindSandboxes, bindRootfs, filepath.Join(bindRootfs, "etc"),
	} {
		spec := f.spec("true")
		spec.Mounts = []vmdriver.Mount{{HostPath: host, Path: "/data"}}
		err := f.d.Create(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), "state directory") {
			t.Errorf("volume of %s: Create = %v, want refused (state directory)", host, err)
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	must(t, os.Symlink(sandboxes, link))
	spec := f.spec("true")
	spec.Mounts = []vmdriver.Mount{{HostPath: link, Path: "/data"}}
	if err := f.d.Create(ctx, spec); !errors.Is(err, ErrLinkInHostPath) {
		t.Errorf("volume of a link to the state dir: Create = %v, want refused (link)", err)
	}
	spec = f.spec("true")
	spec.Mounts = []vmdriver.Mount{{HostPath: t.TempDir(), Path: "/data"}, {HostPath: elsewhere, Path: "/elsewhere"}}
	must(t, f.d.Create(ctx, spec))
}

// A link put into a volume's host path after Create is refused at Start,
// and the sandbox never runs with the link's target; a volume is a plain
// bind: what is mounted below its host path is not in the sandbox.
func TestVolumeLinkCaughtAtStart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	shared := filepath.Join(f.base, "shared")
	sub := filepath.Join(shared, "sub")
	must(t, os.MkdirAll(sub, 0o755))
	must(t, os.WriteFile(filepath.Join(sub, "mine"), []byte("volume\n"), 0o644))
	must(t, os.Mkdir(filepath.Join(sub, "mnt"), 0o755))
	bindMount(t, "/etc", filepath.Join(sub, "mnt"))

	spec := f.spec(`ls /data > /.msb/ls; ls /data/mnt > /.msb/mnt; cat /data/mine > /.msb/mine; touch /.msb/done; sleep 100`)
	spec.Mounts = []vmdriver.Mount{{HostPath: sub, Path: "/data", ReadOnly: true}}
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	agent := f.d.agentDir(spec.ID)
	waitFor(t, filepath.Join(agent, "done"), 10*time.Second)
	if got, _ := os.ReadFile(filepath.Join(agent, "mine")); string(got) != "volume\n" {
		t.Errorf("volume file = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(agent, "mnt")); len(got) != 0 {
		t.Errorf("what is mounted below the volume's host path reached the sandbox: %q", got)
	}
	if mps, _ := mountPoints(f.d.volumesDir(spec.ID)); len(mps) != 0 {
		t.Errorf("staging mounts left after the start: %v", mps)
	}
	must(t, f.d.Stop(ctx, spec.ID, time.Second))
	must(t, f.d.Delete(ctx, spec.ID, false))

	// Swap the directory for a link to /etc (as a sandbox writing into
	// shared could), then start again.
	unix.Unmount(filepath.Join(sub, "mnt"), unix.MNT_DETACH)
	must(t, os.Rename(sub, filepath.Join(shared, "old")))
	must(t, os.Symlink("/etc", sub))
	os.Remove(filepath.Join(agent, "done"))
	err := f.d.Start(ctx, spec.ID)
	var le *LinkError
	if !errors.As(err, &le) || le.Component != sub {
		t.Fatalf("Start after the swap = %v, want refused naming %s", err, sub)
	}
	if st, _ := f.d.State(ctx, spec.ID); st.Status.Alive() {
		t.Fatalf("the sandbox runs: %+v", st)
	}
	if mps, _ := mountPoints(f.d.SandboxDir(spec.ID)); len(mps) > 0 {
		for _, mp := range mps {
			if strings.Contains(mp, "/volumes/") {
				t.Errorf("a staging mount is left: %s", mp)
			}
		}
	}
}

// Refusals are vmdriver.ErrVolumeRefused, so the reconciler names them.
func TestVolumeRefusalsAreTyped(t *testing.T) {
	if !errors.Is(&LinkError{Path: "/a", Component: "/a"}, vmdriver.ErrVolumeRefused) {
		t.Error("a LinkError is not ErrVolumeRefused")
	}
	if !errors.Is(refusedVolume{"x"}, vmdriver.ErrVolumeRefused) {
		t.Error("a state directory refusal is not ErrVolumeRefused")
	}
}

// The host budgets are read from this host: pid_max is there, and keys are
// not charged per sandbox (runc --no-new-keyring).
func TestHostLimitsRead(t *testing.T) {
	d := &Driver{}
	seen := map[string]vmdriver.HostLimit{}
	for _, l := range d.HostLimits() {
		seen[l.Name] = l
	}
	if l := seen["kernel.pid_max"]; l.Limit <= 0 || l.Used <= 0 || l.Room() < 0 {
		t.Errorf("kernel.pid_max: %+v", l)
	}
	if l, ok := seen["kernel.keys.maxkeys"]; !ok || l.Room() != -1 {
		t.Errorf("kernel.keys.maxkeys: %+v, want listed and not bounding sandboxes", l)
	}
}

// The microVM driver opens volumes through Host.VolumeTree: the same rules
// (no link, msbd's state out of reach) and a detached tree of what was
// opened, without what is mounted below it.
func TestHostVolumeTree(t *testing.T) {
	requireRunc(t)
	base := tempDir(t)
	state := filepath.Join(base, "state")
	must(t, os.Mkdir(state, 0o711))
	h, err := NewHost(Options{StateDir: filepath.Join(state, "krun")}, state)
	must(t, err)
	vol := filepath.Join(base, "vol")
	must(t, os.MkdirAll(filepath.Join(vol, "mnt"), 0o755))
	must(t, os.WriteFile(filepath.Join(vol, "f"), []byte("x"), 0o644))
	bindMount(t, "/etc", filepath.Join(vol, "mnt"))
	must(t, os.Symlink(vol, filepath.Join(base, "link")))

	fd, err := h.VolumeTree(BindMount{Source: vol, Target: "/v", ReadOnly: true, Volume: true})
	must(t, err)
	defer unix.Close(fd)
	if _, err := os.Stat(fmt.Sprintf("/proc/self/fd/%d/f", fd)); err != nil {
		t.Errorf("the tree lacks the volume's file: %v", err)
	}
	if ents, _ := os.ReadDir(fmt.Sprintf("/proc/self/fd/%d/mnt", fd)); len(ents) != 0 {
		t.Errorf("what is mounted below the volume is in the tree: %d entries", len(ents))
	}
	if _, err := h.VolumeTree(BindMount{Source: filepath.Join(base, "link"), Target: "/v"}); !errors.Is(err, ErrLinkInHostPath) {
		t.Errorf("a link: %v, want refused", err)
	}
	for _, p := range []string{state, filepath.Join(state, "krun", "sandboxes"), base} {
		if _, err := h.VolumeTree(BindMount{Source: p, Target: "/v"}); !errors.Is(err, vmdriver.ErrVolumeRefused) {
			t.Errorf("%s: %v, want refused (state directory)", p, err)
		}
	}
}

// A mount the host makes below a volume's path after the volume was staged
// does not show up in the staged tree, even when the volume's own mount is
// shared (as systemd makes /): the staged clone is private.
func TestStagedVolumeIsPrivate(t *testing.T) {
	requireRunc(t)
	base := tempDir(t)
	state := filepath.Join(base, "state")
	must(t, os.Mkdir(state, 0o711))
	h, err := NewHost(Options{StateDir: filepath.Join(state, "krun")}, state)
	must(t, err)
	vol := filepath.Join(base, "vol")
	must(t, os.MkdirAll(filepath.Join(vol, "sub"), 0o755))
	bindMount(t, vol, vol)
	if err := unix.Mount("", vol, "", unix.MS_SHARED, ""); err != nil {
		t.Skipf("cannot make %s a shared mount: %v", vol, err)
	}
	fd, err := h.VolumeTree(BindMount{Source: vol, Target: "/v", Volume: true})
	must(t, err)
	defer unix.Close(fd)
	staged := filepath.Join(base, "staged")
	must(t, os.Mkdir(staged, 0o700))
	must(t, unix.MoveMount(fd, "", unix.AT_FDCWD, staged, unix.MOVE_MOUNT_F_EMPTY_PATH))
	t.Cleanup(func() { unix.Unmount(staged, unix.MNT_DETACH) })

	must(t, unix.Mount("tmpfs", filepath.Join(vol, "sub"), "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(filepath.Join(vol, "sub"), unix.MNT_DETACH) })
	must(t, os.WriteFile(filepath.Join(vol, "sub", "later"), []byte("x"), 0o644))
	if _, err := os.Stat(filepath.Join(staged, "sub", "later")); err == nil {
		t.Error("a host mount made below the volume after staging propagated into the staged tree")
	}
}
