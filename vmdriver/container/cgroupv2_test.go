package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// The helper process of TestCgroupV2AgentMovesThroughHostFD: the test
// binary run again, as root of its own user namespace (an unprivileged
// host uid) in the sandbox's agent cgroup, standing in for the agent.
func init() {
	if os.Getenv("MSB_CGV2_HELPER") != "" {
		os.Exit(cgv2Helper())
	}
}

// cgv2Helper makes a cgroup namespace rooted at its cgroup (as runc does
// for the agent), starts a child (the trampoline's part) and tries to
// move it into the workload cgroup twice: through cgroup.procs opened by
// itself (MSB_CGV2_PROCS), then through fd 3, opened by the test as host
// root. It prints the outcome of each, then waits for EOF on stdin.
func cgv2Helper() int {
	runtime.LockOSThread() // namespaces belong to the thread that unshares
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		fmt.Printf("unshare: %v\n", err)
		return 1
	}
	cg, _ := os.ReadFile("/proc/thread-self/cgroup")
	for _, l := range strings.Split(string(cg), "\n") {
		if strings.HasPrefix(l, "0::") {
			fmt.Printf("cgroupns-view %s\n", strings.TrimPrefix(l, "0::"))
		}
	}
	child := exec.Command("/bin/sleep", "60")
	if err := child.Start(); err != nil {
		fmt.Printf("start child: %v\n", err)
		return 1
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	pid := []byte(strconv.Itoa(child.Process.Pid))
	f, err := os.OpenFile(os.Getenv("MSB_CGV2_PROCS"), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write(pid)
		f.Close()
	}
	fmt.Printf("own-open %s\n", errName(err))
	_, err = unix.Write(3, pid)
	fmt.Printf("host-fd %s\n", errName(err))
	fmt.Printf("child %d\n", child.Process.Pid)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func errName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// cgroup2Mount is a mounted cgroup v2 hierarchy (the unified mount of a
// hybrid host, or /sys/fs/cgroup) and its super options.
func cgroup2Mount(t *testing.T) (mp, superOpts string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, p := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(p) >= 3 && p[0] == "cgroup2" {
			return unescapeMountinfo(f[4]), p[2]
		}
	}
	t.Skip("no cgroup v2 hierarchy is mounted here")
	return "", ""
}

// withNSDelegate makes the cgroup v2 hierarchy treat cgroup namespaces as
// delegation boundaries for the test, as systemd mounts it: only then does
// the kernel check a migration against the writer's cgroup namespace, the
// check the design depends on. The option is global to the hierarchy; it
// is put back as it was.
func withNSDelegate(t *testing.T, mp, superOpts string) {
	t.Helper()
	opts := strings.Split(superOpts, ",")
	if contains(opts, "nsdelegate") {
		return
	}
	var keep []string
	for _, o := range opts {
		if o != "rw" && o != "ro" {
			keep = append(keep, o)
		}
	}
	restore := strings.Join(keep, ",")
	if err := unix.Mount("", mp, "", unix.MS_REMOUNT, strings.Join(append(keep, "nsdelegate"), ",")); err != nil {
		t.Skipf("cannot remount %s with nsdelegate: %v", mp, err)
	}
	t.Cleanup(func() {
		if err := unix.Mount("", mp, "", unix.MS_REMOUNT, restore); err != nil {
			t.Errorf("put back the options of %s: %v", mp, err)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCgroupV2AgentMovesThroughHostFD runs the v2 design's migration for
// real on a cgroup2 mount: msbd's layout (makeV2Cgroups), an "agent" in
// its own user and cgroup namespaces rooted at <sandbox>/agent, as runc
// puts the real one. Through the cgroup.procs descriptor the host opened,
// it moves a process of its into the workload sibling; through the same
// file opened by itself (its owner made the helper's uid, so that only the
// cgroup namespace check remains) it cannot. The limits are not part of
// this test: a hybrid host binds memory and pids to v1.
func TestCgroupV2AgentMovesThroughHostFD(t *testing.T) {
	mp, superOpts := cgroup2Mount(t)
	var u unix.Utsname
	must(t, unix.Uname(&u))
	if release := unix.ByteSliceToString(u.Release[:]); !kernelAtLeast(release, 5, 16) {
		t.Skipf("Linux %s checks a cgroup.procs write against the writer's cgroup namespace (before 5.16): the v2 workload cgroup is off there", release)
	}
	withNSDelegate(t, mp, superOpts)
	d := &Driver{cgroupPrefix: "msb-cgv2test-"}
	id := randomID()
	rel := d.cgroupsPath(id)
	sb := filepath.Join(mp, rel)
	t.Cleanup(func() { removeCgroupTree(sb) })

	// A stale tree of an earlier run is replaced.
	must(t, os.MkdirAll(filepath.Join(sb, workloadCgroup, "stale"), 0o755))
	must(t, os.Mkdir(filepath.Join(sb, agentCgroup), 0o755))
	procs, err := makeV2Cgroups(mp, rel, v2Limits{})
	must(t, err)
	defer procs.Close()
	if fileExists(filepath.Join(sb, workloadCgroup, "stale")) || fileExists(filepath.Join(sb, agentCgroup)) {
		t.Errorf("makeV2Cgroups kept the stale cgroups under %s", sb)
	}
	must(t, os.Mkdir(filepath.Join(sb, agentCgroup), 0o755)) // runc's part
	agentDir, err := os.Open(filepath.Join(sb, agentCgroup))
	must(t, err)
	defer agentDir.Close()

	hostUID := 2_000_000_000 + os.Getpid()%1_000_000
	wlProcs := filepath.Join(sb, workloadCgroup, "cgroup.procs")
	for _, p := range []string{wlProcs, filepath.Join(sb, "cgroup.procs"), filepath.Join(sb, agentCgroup, "cgroup.procs")} {
		must(t, os.Chown(p, hostUID, hostUID))
	}
	// /proc/self/exe: the build directory above the binary is root's alone.
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), "MSB_CGV2_HELPER=1", "MSB_CGV2_PROCS="+wlProcs)
	cmd.ExtraFiles = []*os.File{procs}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostUID, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostUID, Size: 1}},
		Credential:  &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		UseCgroupFD: true,
		CgroupFD:    int(agentDir.Fd()),
	}
	stdin, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })

	got := map[string]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		got[k] = v
		if k == "child" || k == "unshare" || k == "start" {
			break
		}
	}
	t.Logf("helper: %v", got)
	if got["cgroupns-view"] != "/" {
		t.Fatalf("the helper's cgroup namespace is not rooted at its cgroup: sees %q", got["cgroupns-view"])
	}
	if got["own-open"] != "ENOENT" {
		t.Errorf("a move through cgroup.procs the agent opened itself: %s, want ENOENT (the workload lies outside its cgroup namespace)", got["own-open"])
	}
	if got["host-fd"] != "ok" {
		t.Errorf("a move through the descriptor host root opened: %s, want ok", got["host-fd"])
	}
	cg, err := os.ReadFile("/proc/" + got["child"] + "/cgroup")
	must(t, err)
	if want := "0::" + rel + "/" + workloadCgroup + "\n"; !strings.Contains(string(cg), want) {
		t.Errorf("child's /proc/%s/cgroup = %q, want the line %q", got["child"], cg, want)
	}

	// Delete's part: counted while there, removed once empty.
	if n := d.cgroupProcs(id); n != 2 {
		t.Errorf("cgroupProcs = %d, want 2 (helper and child)", n)
	}
	stdin.Close()
	must(t, cmd.Wait())
	must(t, d.removeCgroups(id))
	if fileExists(sb) {
		t.Errorf("%s left after removeCgroups", sb)
	}
}

// TestCgroupV2LimitsNeedControllers: a limit whose controller the
// hierarchy does not offer is a clear error and leaves no cgroup behind.
func TestCgroupV2LimitsNeedControllers(t *testing.T) {
	mp, _ := cgroup2Mount(t)
	b, err := os.ReadFile(filepath.Join(mp, "cgroup.controllers"))
	must(t, err)
	if strings.Contains(string(b), "memory") {
		t.Skipf("%s offers the memory controller: the refusal cannot be shown here", mp)
	}
	d := &Driver{cgroupPrefix: "msb-cgv2test-"}
	rel := d.cgroupsPath(randomID())
	limit := int64(100 << 20)
	_, err = makeV2Cgroups(mp, rel, v2LimitsOf(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}))
	if err == nil || !strings.Contains(err.Error(), "memory controller") {
		t.Errorf("makeV2Cgroups with a memory limit on %s: %v, want the memory controller named", mp, err)
	}
	if fileExists(filepath.Join(mp, rel)) {
		removeCgroupTree(filepath.Join(mp, rel))
		t.Errorf("a failed makeV2Cgroups left %s", filepath.Join(mp, rel))
	}
}

func TestV2LimitsOf(t *testing.T) {
	mem := int64(256<<20) + agentMemoryReserve
	swap := mem
	pids := int64(100) + agentPIDsReserve
	quota, period := int64(50000), uint64(100000)
	l := v2LimitsOf(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem, Swap: &swap},
		Pids:   &specs.LinuxPids{Limit: &pids},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	})
	want := v2Limits{
		sandbox:  [][2]string{{"memory.max", strconv.FormatInt(mem, 10)}, {"memory.swap.max", "0"}, {"pids.max", "164"}, {"cpu.max", "50000 100000"}},
		workload: [][2]string{{"memory.max", strconv.FormatInt(256<<20, 10)}, {"memory.swap.max", "0"}, {"pids.max", "100"}},
	}
	if fmt.Sprint(l) != fmt.Sprint(want) {
		t.Errorf("v2LimitsOf = %v\nwant %v", l, want)
	}
	if l := v2LimitsOf(&specs.LinuxResources{}); len(l.sandbox)+len(l.workload) != 0 {
		t.Errorf("no limits: %v", l)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for release, want := range map[string]bool{
		"6.1.0-18-amd64": true, "5.16.0": true, "5.15.90-generic": false, "4.19.0": false,
		"6.18.44-fc-v1272": true, "10.0": true, "garbage": false,
	} {
		if got := kernelAtLeast(release, 5, 16); got != want {
			t.Errorf("kernelAtLeast(%q, 5, 16) = %v, want %v", release, got, want)
		}
	}
}

// asCgroupV2 makes the driver take this host for a cgroup v2 one whose
// hierarchy is mounted at mp, until the test ends.
func asCgroupV2(t *testing.T, mp string, unified bool) {
	t.Helper()
	u, why := unifiedCgroups() // computed once; then overridden
	root := cgroupV2Root
	cgroupUnified, cgroupV2Why, cgroupV2Root = unified, "", mp
	t.Cleanup(func() { cgroupUnified, cgroupV2Why, cgroupV2Root = u, why, root })
}

// TestCgroupV2Bundle: on a cgroup v2 host a sandbox's bundle puts runc in
// the agent leaf and gives the agent one descriptor; at start the driver
// makes the layout from the bundle and opens the workload's cgroup.procs;
// Delete removes it all. A bundle written for the other cgroup version is
// refused with a clear message. (No limits: this host's cgroup2 mount has
// no controllers.)
func TestCgroupV2Bundle(t *testing.T) {
	mp, _ := cgroup2Mount(t)
	f := newFixture(t)
	ctx := context.Background()
	asCgroupV2(t, mp, true)
	spec := f.spec("exec sleep 1000")
	spec.MemoryBytes, spec.PIDs, spec.MilliCPUs = 0, 0, 0
	must(t, f.d.Create(ctx, spec))
	s, err := f.d.readBundle(spec.ID)
	must(t, err)
	if want := f.d.cgroupsPath(spec.ID) + "/" + agentCgroup; s.Linux.CgroupsPath != want {
		t.Errorf("bundle cgroupsPath = %q, want %q", s.Linux.CgroupsPath, want)
	}
	i := slices.Index(s.Process.Args, "--workload-cgroup-fds")
	if i < 0 || i+1 >= len(s.Process.Args) || strings.Contains(s.Process.Args[i+1], ",") {
		t.Fatalf("agent args %q: want --workload-cgroup-fds with one descriptor", s.Process.Args)
	}
	files, err := f.d.workloadCgroupFiles(spec.ID, mustBundle(t, f.d, spec.ID))
	must(t, err)
	for _, f := range files {
		f.Close()
	}
	sb := filepath.Join(mp, f.d.cgroupsPath(spec.ID))
	if len(files) != 1 || !fileExists(filepath.Join(sb, workloadCgroup, "cgroup.procs")) {
		t.Errorf("workloadCgroupFiles: %d files, %s/%s exists: %v", len(files), sb, workloadCgroup, fileExists(filepath.Join(sb, workloadCgroup)))
	}

	asCgroupV2(t, mp, false)
	if _, err := f.d.workloadCgroupFiles(spec.ID, mustBundle(t, f.d, spec.ID)); err == nil || !strings.Contains(err.Error(), "this host runs cgroup v1") {
		t.Errorf("a v2 bundle on a v1 host: %v, want refused", err)
	}
	must(t, f.d.Delete(ctx, spec.ID, true))
	if fileExists(sb) {
		t.Errorf("%s left after Delete", sb)
	}
}

// TestCgroupV2AgentFlow runs a real sandbox with the v2 layout on this
// host's cgroup2 mount: runc puts the agent in <sandbox>/agent and roots
// its cgroup namespace there, and the real agent's trampoline moves the
// main command and an exec into the workload sibling through msbd's
// descriptor. The limits are not part of it (no controllers here).
func TestCgroupV2AgentFlow(t *testing.T) {
	mp, superOpts := cgroup2Mount(t)
	var u unix.Utsname
	must(t, unix.Uname(&u))
	if release := unix.ByteSliceToString(u.Release[:]); !kernelAtLeast(release, 5, 16) {
		t.Skipf("Linux %s: the v2 workload cgroup needs 5.16", release)
	}
	f := newFixture(t)
	ctx := context.Background()
	withNSDelegate(t, mp, superOpts)
	asCgroupV2(t, mp, true)
	spec := f.spec("exec sleep 1000")
	spec.MemoryBytes, spec.PIDs, spec.MilliCPUs = 0, 0, 0
	spec.AgentPath = agenttest.Build(t)
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st := waitStatus(t, f.d, spec.ID, vmdriver.StatusRunning, 15*time.Second)
	wctx, c := dialAgent(t, ctx, f.d, spec.ID, 30*time.Second)
	var out, errb bytes.Buffer
	code, err := c.Exec(wctx, agent.ExecRequest{Argv: []string{"cat", "/proc/self/cgroup"}, Stdout: &out, Stderr: &errb})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d, %v, %s", code, err, errb.String())
	}
	if !strings.Contains(out.String(), "\n0::/../"+workloadCgroup+"\n") && !strings.HasPrefix(out.String(), "0::/../"+workloadCgroup+"\n") {
		t.Errorf("an exec's /proc/self/cgroup in the sandbox:\n%s\nwant 0::/../%s (the workload, beside the agent's namespace root)", out.String(), workloadCgroup)
	}
	sb := filepath.Join(mp, f.d.cgroupsPath(spec.ID))
	read := func(p string) []string {
		b, err := os.ReadFile(p)
		must(t, err)
		return strings.Fields(string(b))
	}
	if procs := read(filepath.Join(sb, agentCgroup, "cgroup.procs")); !slices.Contains(procs, strconv.Itoa(st.PID)) {
		t.Errorf("%s/%s/cgroup.procs = %v, want the agent %d", sb, agentCgroup, procs, st.PID)
	}
	if procs := read(filepath.Join(sb, workloadCgroup, "cgroup.procs")); len(procs) != 1 {
		t.Errorf("%s/%s/cgroup.procs = %v, want the main command alone", sb, workloadCgroup, procs)
	}
	if procs := read(filepath.Join(sb, "cgroup.procs")); len(procs) != 0 {
		t.Errorf("%s/cgroup.procs = %v, want none (no internal processes)", sb, procs)
	}
	must(t, f.d.Delete(ctx, spec.ID, true))
	if fileExists(sb) {
		t.Errorf("%s left after Delete", sb)
	}
}

func mustBundle(t *testing.T, d *Driver, id string) *specs.Spec {
	t.Helper()
	s, err := d.readBundle(id)
	must(t, err)
	return s
}
