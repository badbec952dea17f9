package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

func TestNewRuncMissing(t *testing.T) {
	_, err := New(Options{StateDir: t.TempDir(), RuncPath: "/nonexistent/runc"})
	if err == nil || !strings.Contains(err.Error(), "runc not found: install it (apt-get install runc)") {
		t.Fatalf("New with a missing runc: %v", err)
	}
}

func TestValidation(t *testing.T) {
	requireRunc(t)
	d, err := New(Options{StateDir: filepath.Join(tempDir(t), "state")})
	must(t, err)
	good := vmdriver.Spec{ID: "ok", Layers: []string{"/"}, AgentPath: "/bin/busybox", Args: []string{"true"}}
	for _, tc := range []struct {
		name string
		mod  func(*vmdriver.Spec)
		want string
	}{
		{"path traversal id", func(s *vmdriver.Spec) { s.ID = "../x" }, "sandbox id"},
		{"slash id", func(s *vmdriver.Spec) { s.ID = "a/b" }, "sandbox id"},
		{"no layers", func(s *vmdriver.Spec) { s.Layers = nil }, "no image layers"},
		{"relative layer", func(s *vmdriver.Spec) { s.Layers = []string{"x"} }, "not an absolute path"},
		{"no args", func(s *vmdriver.Spec) { s.Args = nil }, "no command"},
		{"volume over agent", func(s *vmdriver.Spec) { s.Mounts = []vmdriver.Mount{{HostPath: "/tmp", Path: "/.msb/x"}} }, "reserved"},
		{"volume at root", func(s *vmdriver.Spec) { s.Mounts = []vmdriver.Mount{{HostPath: "/tmp", Path: "/"}} }, "other than /"},
		{"volume over proc", func(s *vmdriver.Spec) { s.Mounts = []vmdriver.Mount{{HostPath: "/tmp", Path: "/proc/sys"}} }, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mod(&s)
			err := d.Create(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestLifecycle runs one sandbox through its whole life and checks the
// isolation it got on the way.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec(`
cat /proc/1/status > /.msb/status-copy
cat /proc/net/dev > /.msb/netdev
cat /sys/class/net/lo/flags > /.msb/lo-flags
hostname > /.msb/hostname
echo written-by-root > /etc/written-by-root
echo newuser:x:1000:1000::/:/bin/sh >> /etc/passwd
touch /new-in-root
cat /etc/motd > /.msb/motd
(mknod /dev/x c 1 3 2>/dev/null && echo yes || echo no) > /.msb/mknod
touch /.msb/ready-1
exec sleep 1000`)
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Create(ctx, spec)) // idempotent
	must(t, f.d.Start(ctx, spec.ID))
	agent := f.d.agentDir(spec.ID)
	waitFor(t, filepath.Join(agent, "ready-1"), 10*time.Second)
	must(t, f.d.Start(ctx, spec.ID)) // running: nothing to do

	st, err := f.d.State(ctx, spec.ID)
	must(t, err)
	if st.Status != vmdriver.StatusRunning || st.PID <= 0 || st.StartedAt.IsZero() {
		t.Fatalf("State = %+v, want running with a PID and a start time", st)
	}

	ids := f.ids(spec.ID)
	t.Run("host uid is the sandbox's own", func(t *testing.T) {
		if ids.Shared || ids.UID == mappedID || ids.UID != ids.Owner {
			t.Fatalf("ids %+v: want a range of its own", ids)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
		must(t, err)
		if uid := strings.Fields(statusField(string(b), "Uid")); len(uid) == 0 || uid[0] != strconv.Itoa(int(ids.UID)) {
			t.Errorf("host Uid of sandbox init = %v, want %d", uid, ids.UID)
		}
		owner, err := userNSOwner(fmt.Sprintf("/proc/%d/ns/user", st.PID))
		must(t, err)
		if owner != ids.Owner {
			t.Errorf("the sandbox's user namespace is owned by %d, want %d", owner, ids.Owner)
		}
	})
	t.Run("no new privs and seccomp", func(t *testing.T) {
		status := waitFor(t, filepath.Join(agent, "status-copy"), time.Second)
		if v := statusField(status, "NoNewPrivs"); v != "1" {
			t.Errorf("NoNewPrivs = %q, want 1", v)
		}
		if v := statusField(status, "Seccomp"); v != "2" {
			t.Errorf("Seccomp = %q, want 2 (filter)", v)
		}
		if v := statusField(status, "CapAmb"); v != "0000000000000000" {
			t.Errorf("CapAmb = %q, want none", v)
		}
		capEff, _ := strconv.ParseUint(statusField(status, "CapEff"), 16, 64)
		for _, c := range []uint{unix.CAP_SYS_ADMIN, unix.CAP_NET_RAW, unix.CAP_MKNOD, unix.CAP_NET_ADMIN, unix.CAP_SYS_PTRACE} {
			if capEff&(1<<c) != 0 {
				t.Errorf("CapEff %x has capability %d", capEff, c)
			}
		}
		if got := waitFor(t, filepath.Join(agent, "mknod"), time.Second); strings.TrimSpace(got) != "no" {
			t.Errorf("mknod in the sandbox: %q, want it refused", got)
		}
	})
	t.Run("network namespace has only lo, up", func(t *testing.T) {
		netdev := waitFor(t, filepath.Join(agent, "netdev"), time.Second)
		var ifaces []string
		for _, line := range strings.Split(netdev, "\n")[2:] {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				ifaces = append(ifaces, name)
			}
		}
		if !slices.Equal(ifaces, []string{"lo"}) {
			t.Errorf("interfaces = %v, want [lo]", ifaces)
		}
		flags, _ := strconv.ParseUint(strings.TrimSpace(waitFor(t, filepath.Join(agent, "lo-flags"), time.Second)), 0, 32)
		if flags&unix.IFF_UP == 0 {
			t.Errorf("lo flags %#x: not up", flags)
		}
	})
	t.Run("hostname and layers", func(t *testing.T) {
		if h := strings.TrimSpace(waitFor(t, filepath.Join(agent, "hostname"), time.Second)); h != "sbx" {
			t.Errorf("hostname = %q", h)
		}
		if m := strings.TrimSpace(waitFor(t, filepath.Join(agent, "motd"), time.Second)); m != "layer1" {
			t.Errorf("/etc/motd = %q, want the upper layer's", m)
		}
	})
	t.Run("sandbox root writes to / and /etc with copy-up", func(t *testing.T) {
		upper := filepath.Join(f.d.SandboxDir(spec.ID), "upper")
		for _, p := range []string{"etc/written-by-root", "new-in-root", "etc/passwd"} {
			var sb unix.Stat_t
			if err := unix.Lstat(filepath.Join(upper, p), &sb); err != nil {
				t.Errorf("upper/%s: %v", p, err)
				continue
			}
			if sb.Uid != ids.UID {
				t.Errorf("upper/%s owned by %d, want %d", p, sb.Uid, ids.UID)
			}
		}
		b, _ := os.ReadFile(filepath.Join(upper, "etc/passwd"))
		if !strings.HasPrefix(string(b), "root:x:0:0") || !strings.Contains(string(b), "newuser") {
			t.Errorf("copied-up /etc/passwd = %q", b)
		}
	})
	t.Run("cgroup limits", func(t *testing.T) {
		checkCgroupLimits(t, f.d, spec.ID, st.PID, spec.MemoryBytes, spec.PIDs)
	})

	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second))
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second)) // stopped: nothing to do
	if st, err := f.d.State(ctx, spec.ID); err != nil || st.Status != vmdriver.StatusStopped || st.PID != 0 {
		t.Fatalf("after Stop: %+v, %v", st, err)
	}
	must(t, f.d.Delete(ctx, spec.ID, false))
	must(t, f.d.Delete(ctx, spec.ID, false))
	if mps, _ := mountPoints(f.d.SandboxDir(spec.ID)); len(mps) != 0 {
		t.Fatalf("mounted after Delete(purge=false): %v", mps)
	}
	if st, err := f.d.State(ctx, spec.ID); err != nil || st.Status != vmdriver.StatusStopped {
		t.Fatalf("after Delete(purge=false): %+v, %v; want stopped (the writable layer is kept)", st, err)
	}

	// Resume with a new command: the writable layer is still there.
	spec.Args = []string{"sh", "-c", "cat /etc/written-by-root > /.msb/persisted; exit 3"}
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st = waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	if !st.Exited || st.ExitCode != 3 {
		t.Errorf("State after exit 3 = %+v", st)
	}
	if got := waitFor(t, filepath.Join(agent, "persisted"), time.Second); got != "written-by-root\n" {
		t.Errorf("file written before Delete(purge=false): %q", got)
	}

	// Start again after exit: a fresh run, stale exit code gone until it exits.
	must(t, f.d.Start(ctx, spec.ID))
	st = waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	if !st.Exited || st.ExitCode != 3 {
		t.Errorf("State after the second exit = %+v", st)
	}

	must(t, f.d.Delete(ctx, spec.ID, true))
	assertGone(t, f.d, spec.ID)
}

func checkCgroupLimits(t *testing.T, d *Driver, id string, pid int, mem, pids int64) {
	dirs := d.cgroupDirs(id)
	if len(dirs) == 0 {
		t.Fatalf("no cgroup directory for %s", id)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%v", err)
		}
		return strings.TrimSpace(string(b))
	}
	// With a workload cgroup (cgroup v1) the sandbox's cgroup holds the
	// agent with a reserve above the limits, the workload child the limits.
	workload := len(workloadMounts()) > 0
	sandboxMem, sandboxPids := mem, pids
	if workload {
		sandboxMem, sandboxPids = mem+agentMemoryReserve, pids+agentPIDsReserve
		for _, mp := range workloadMounts() {
			dir := filepath.Join(mp, d.cgroupsPath(id), workloadCgroup)
			for file, want := range map[string]string{
				"memory.limit_in_bytes":       strconv.FormatInt(mem, 10),
				"memory.memsw.limit_in_bytes": strconv.FormatInt(mem, 10),
				"pids.max":                    strconv.FormatInt(pids, 10),
			} {
				if p := filepath.Join(dir, file); fileExists(p) {
					if got := read(p); got != want {
						t.Errorf("%s = %q, want %q", p, got, want)
					}
				}
			}
		}
	}
	// On cgroup v2 the agent is in the sandbox cgroup's agent child, its
	// workload sibling has the limits (see cgroupv2.go).
	procsIn := ""
	if unified, why := unifiedCgroups(); unified && why == "" {
		sandboxMem, sandboxPids = mem+agentMemoryReserve, pids+agentPIDsReserve
		procsIn = agentCgroup
		wl := filepath.Join(cgroupV2Root, d.cgroupsPath(id), workloadCgroup)
		for file, want := range map[string]string{"memory.max": strconv.FormatInt(mem, 10), "pids.max": strconv.FormatInt(pids, 10)} {
			if got := read(filepath.Join(wl, file)); got != want {
				t.Errorf("%s/%s = %q, want %q", wl, file, got, want)
			}
		}
	}
	mem, pids = sandboxMem, sandboxPids
	var sawMem, sawPids bool
	for _, dir := range dirs {
		if procs := read(filepath.Join(dir, procsIn, "cgroup.procs")); !slices.Contains(strings.Fields(procs), strconv.Itoa(pid)) {
			t.Errorf("%s/cgroup.procs = %q, want the sandbox init %d", dir, procs, pid)
		}
		for file, want := range map[string]string{
			"memory.limit_in_bytes":       strconv.FormatInt(mem, 10), // v1
			"memory.memsw.limit_in_bytes": strconv.FormatInt(mem, 10), // v1 with swap accounting
			"memory.max":                  strconv.FormatInt(mem, 10), // v2
			"memory.swap.max":             "0",                        // v2
			"pids.max":                    strconv.FormatInt(pids, 10),
			"cpu.cfs_quota_us":            "50000", // v1, 500 millicpus
			"cpu.max":                     "50000 100000",
		} {
			p := filepath.Join(dir, file)
			if !fileExists(p) {
				continue
			}
			if got := read(p); got != want {
				t.Errorf("%s = %q, want %q", p, got, want)
			}
			sawMem = sawMem || strings.HasPrefix(file, "memory.")
			sawPids = sawPids || file == "pids.max"
		}
	}
	if !sawMem || !sawPids {
		t.Errorf("memory limit seen: %v, pids limit seen: %v (cgroups %v)", sawMem, sawPids, dirs)
	}
}

func assertGone(t *testing.T, d *Driver, id string) {
	t.Helper()
	if mps, _ := mountPoints(d.opts.StateDir); len(mps) != 0 {
		t.Errorf("still mounted under the state dir: %v", mps)
	}
	if dirs := d.cgroupDirs(id); len(dirs) != 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	if fileExists(filepath.Join(d.runcRoot, id)) {
		t.Errorf("runc state left in %s", d.runcRoot)
	}
	if fileExists(d.SandboxDir(id)) {
		t.Errorf("sandbox dir %s left", d.SandboxDir(id))
	}
	if _, err := d.State(context.Background(), id); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("State after purge: %v, want ErrNotFound", err)
	}
	if ids, _ := d.List(context.Background()); slices.Contains(ids, id) {
		t.Errorf("List after purge: %v", ids)
	}
}

func TestIdempotentOnUnknown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.d.State(ctx, "nope"); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("State: %v, want ErrNotFound", err)
	}
	must(t, f.d.Delete(ctx, "nope", true))
	must(t, f.d.Delete(ctx, "nope", false))
	must(t, f.d.Stop(ctx, "nope", time.Second))
	if err := f.d.Start(ctx, "nope"); !errors.Is(err, vmdriver.ErrNotFound) {
		t.Errorf("Start: %v, want ErrNotFound", err)
	}
	if ids, err := f.d.List(ctx); err != nil || len(ids) != 0 {
		t.Errorf("List = %v, %v", ids, err)
	}
}

// TestAdoption simulates an msbd restart: a second Driver on the same state
// dir sees the running sandbox as it is.
func TestAdoption(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("exec sleep 1000")
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	before := waitStatus(t, f.d, spec.ID, vmdriver.StatusRunning, 5*time.Second)

	d2, err := New(Options{StateDir: f.state})
	must(t, err)
	after, err := d2.State(ctx, spec.ID)
	must(t, err)
	if after.Status != vmdriver.StatusRunning || after.PID != before.PID {
		t.Fatalf("after restart: %+v, before: %+v", after, before)
	}
	ids, err := d2.List(ctx)
	must(t, err)
	if !slices.Equal(ids, []string{spec.ID}) {
		t.Errorf("List = %v", ids)
	}
	must(t, d2.Create(ctx, spec)) // must not disturb the running container
	must(t, d2.Start(ctx, spec.ID))
	if st, _ := d2.State(ctx, spec.ID); st.PID != before.PID {
		t.Errorf("PID changed to %d after Create+Start on a running sandbox", st.PID)
	}
	// sleep ignores nothing, but the test agent forwards SIGTERM.
	must(t, d2.Stop(ctx, spec.ID, 5*time.Second))
	must(t, d2.Delete(ctx, spec.ID, true))
	assertGone(t, d2, spec.ID)
}

func TestStopKillsAfterGrace(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("trap '' TERM; touch /.msb/up; while true; do sleep 1; done")
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	waitFor(t, filepath.Join(f.d.agentDir(spec.ID), "up"), 5*time.Second)
	must(t, f.d.Stop(ctx, spec.ID, 300*time.Millisecond))
	if st, _ := f.d.State(ctx, spec.ID); st.Status != vmdriver.StatusStopped {
		t.Fatalf("after Stop: %+v", st)
	}
}

func TestVolumes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ro, rw := filepath.Join(f.base, "ro"), filepath.Join(f.base, "rw")
	for _, dir := range []string{ro, rw} {
		must(t, os.Mkdir(dir, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(ro, "data"), []byte("host data\n"), 0o644))
	spec := f.spec(`
(echo x > /data/new 2>/dev/null && echo writable || echo refused) > /.msb/ro-write
(echo x >> /data/data 2>/dev/null && echo writable || echo refused) > /.msb/ro-append
cat /data/data > /.msb/ro-read
echo from-sandbox > /out/file
touch /.msb/done`)
	spec.Mounts = []vmdriver.Mount{{HostPath: ro, Path: "/data", ReadOnly: true}, {HostPath: rw, Path: "/out"}}
	must(t, f.d.Create(ctx, spec))
	ids := f.ids(spec.ID) // only the mount flag may refuse the write
	for _, p := range []string{ro, rw, filepath.Join(ro, "data")} {
		must(t, os.Chown(p, int(ids.UID), int(ids.GID)))
	}
	must(t, f.d.Start(ctx, spec.ID))
	agent := f.d.agentDir(spec.ID)
	waitFor(t, filepath.Join(agent, "done"), 10*time.Second)
	for file, want := range map[string]string{"ro-write": "refused\n", "ro-append": "refused\n", "ro-read": "host data\n"} {
		if got, _ := os.ReadFile(filepath.Join(agent, file)); string(got) != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(rw, "file")); string(got) != "from-sandbox\n" {
		t.Errorf("rw volume file = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(ro, "data")); string(got) != "host data\n" {
		t.Errorf("ro volume changed: %q", got)
	}
	must(t, f.d.Delete(ctx, spec.ID, true))
	assertGone(t, f.d, spec.ID)
}

// TestManyLayers mounts more layer paths than fit in mount(2)'s one page of
// options, which takes the fsconfig "lowerdir+" path.
func TestManyLayers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	layers := slices.Clone(f.layers)
	long := strings.Repeat("l", 100)
	for i := range 60 {
		dir := filepath.Join(f.base, "many", fmt.Sprintf("%s-%02d", long, i))
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "layer"), []byte(strconv.Itoa(i)+"\n"), 0o644))
		layers = append(layers, dir)
	}
	spec := f.spec("cat /layer > /.msb/top")
	spec.Layers = layers
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	if got, _ := os.ReadFile(filepath.Join(f.d.agentDir(spec.ID), "top")); string(got) != "59\n" {
		t.Errorf("/layer = %q, want the highest layer's 59", got)
	}
}

// TestAgentDirSymlinks: the sandbox owns agent/; what it plants there must
// not make the host write or read outside it.
func TestAgentDirSymlinks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	victim := filepath.Join(f.base, "victim")
	must(t, os.WriteFile(victim, []byte("7\n"), 0o600))
	spec := f.spec("true")
	must(t, f.d.Create(ctx, spec))
	agent := f.d.agentDir(spec.ID)
	// What a malicious sandbox could leave behind before the next start.
	must(t, os.Remove(filepath.Join(agent, "config.json")))
	must(t, os.Symlink(victim, filepath.Join(agent, "config.json")))
	must(t, os.Symlink(victim, filepath.Join(agent, "exit-code")))
	must(t, os.Remove(filepath.Join(agent, "msb-agent")))
	must(t, os.Symlink(victim, filepath.Join(agent, "msb-agent")))
	if st, _ := f.d.State(ctx, spec.ID); st.Exited {
		t.Errorf("exit code read through a symlink: %+v", st)
	}
	must(t, f.d.Create(ctx, spec))
	if b, _ := os.ReadFile(victim); string(b) != "7\n" {
		t.Fatalf("host file written through a symlink: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(agent, "config.json")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("config.json not replaced by a regular file: %v %v", fi, err)
	}
	must(t, f.d.Start(ctx, spec.ID))
	st := waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	if !st.Exited || st.ExitCode != 0 {
		t.Errorf("State = %+v", st)
	}
}

func TestStateDirNotSearchable(t *testing.T) {
	requireRunc(t)
	parent := t.TempDir() // 0700
	_, err := New(Options{StateDir: filepath.Join(parent, "state")})
	if err == nil || !strings.Contains(err.Error(), "not searchable by sandbox users") {
		t.Fatalf("New under a 0700 dir: %v", err)
	}
}

// TestSeccompFilterHandOver: the agent gets the compiled filter through fd 3
// and closes it; a bundle written by an older msbd (runc loads the profile)
// still starts filtered and gets no descriptor.
func TestSeccompFilterHandOver(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	script := `cat /proc/1/status > /.msb/status-copy
ls -l /proc/1/fd > /.msb/fds
touch /.msb/done
exec sleep 1000`
	check := func(t *testing.T, id string, wantArgs bool) {
		agent := f.d.agentDir(id)
		waitFor(t, filepath.Join(agent, "done"), 10*time.Second)
		status := waitFor(t, filepath.Join(agent, "status-copy"), time.Second)
		if v := statusField(status, "Seccomp"); v != "2" {
			t.Errorf("Seccomp = %q, want 2", v)
		}
		// The filter pipe is the only pipe the agent is ever given.
		if fds := waitFor(t, filepath.Join(agent, "fds"), time.Second); strings.Contains(fds, "pipe:") {
			t.Errorf("the agent still holds a pipe:\n%s", fds)
		}
		b, err := os.ReadFile(filepath.Join(f.d.bundleDir(id), "config.json"))
		must(t, err)
		if got := strings.Contains(string(b), "--seccomp-fd"); got != wantArgs {
			t.Errorf("bundle passes --seccomp-fd: %v, want %v", got, wantArgs)
		}
		must(t, f.d.Stop(ctx, id, 2*time.Second))
	}
	t.Run("compiled filter", func(t *testing.T) {
		spec := f.spec(script)
		must(t, f.d.Create(ctx, spec))
		must(t, f.d.Start(ctx, spec.ID))
		check(t, spec.ID, true)
	})
	t.Run("bundle of an older msbd", func(t *testing.T) {
		spec := f.spec(script)
		must(t, f.d.Create(ctx, spec))
		path := filepath.Join(f.d.bundleDir(spec.ID), "config.json")
		b, err := os.ReadFile(path)
		must(t, err)
		var cfg specs.Spec
		must(t, json.Unmarshal(b, &cfg))
		cfg.Process.Args = []string{agentBinary, "init"}
		cfg.Linux.Seccomp, err = seccompProfile()
		must(t, err)
		b, _ = json.Marshal(cfg)
		must(t, os.WriteFile(path, b, 0o600))
		must(t, f.d.Start(ctx, spec.ID))
		check(t, spec.ID, false)
	})
}
