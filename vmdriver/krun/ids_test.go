package krun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/drivertest"
)

// TestRunnersApart checks that every microVM's VMM runs as a host uid of
// its own (its slot of the span, recorded, kept across a reopened driver,
// freed on purge) in a root and PID namespace of its own, seen from the
// host, and that a process with one runner's host ids can neither signal
// another runner nor read its files.
func TestRunnersApart(t *testing.T) {
	requireRoot(t)
	si := newStandIn(t)
	base := tempDir(t)
	self, err := os.Executable()
	must(t, err)
	d, err := New(Options{StateDir: filepath.Join(base, "state"), Library: si.lib, KVMDevice: si.kvm, RunnerPath: self})
	must(t, err)
	if why := d.SharedIDReason(); why != "" {
		t.Skip("sandboxes share one host id range here:", why)
	}
	layers := busyboxLayers(t, base)
	agentPath := agenttest.Build(t)
	ctx := context.Background()
	hostPidNS, err := os.Readlink("/proc/self/ns/pid")
	must(t, err)
	start := func(d *Driver, run bool) (string, container.HostIDs, int) {
		t.Helper()
		spec := vmdriver.Spec{ID: randomID(), Hostname: "apart", Layers: layers, AgentPath: agentPath,
			Args: []string{"sh", "-c", drivertest.ScriptForever}, Env: []string{"PATH=/bin"}, MemoryBytes: 64 << 20, PIDs: 64}
		must(t, d.Create(ctx, spec))
		t.Cleanup(func() { d.Delete(ctx, spec.ID, true) })
		ids, ok, err := d.host.IDs(spec.ID)
		if err != nil || !ok || ids.Shared {
			t.Fatalf("sandbox %s: recorded ids %+v, %v, %v: want a range of its own", spec.ID, ids, ok, err)
		}
		if !run {
			return spec.ID, ids, 0
		}
		must(t, d.Start(ctx, spec.ID))
		if out, code, err := drivertest.AgentExec(t, d, spec.ID, "true"); err != nil || code != 0 {
			t.Fatalf("exec in %s: %q %d %v", spec.ID, out, code, err)
		}
		st, err := d.State(ctx, spec.ID)
		must(t, err)
		// The host's view of the runner: its uids and its user namespace's map.
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
		must(t, err)
		if want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d\n", ids.UID, ids.UID, ids.UID, ids.UID); !strings.Contains(string(status), want) {
			t.Errorf("runner %d of %s: status lacks %q", st.PID, spec.ID, want)
		}
		if want := fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d\n", ids.GID, ids.GID, ids.GID, ids.GID); !strings.Contains(string(status), want) {
			t.Errorf("runner %d of %s: status lacks %q", st.PID, spec.ID, want)
		}
		m, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.PID))
		must(t, err)
		if f := strings.Fields(string(m)); len(f) != 3 || f[0] != "0" || f[1] != strconv.Itoa(int(ids.UID)) || f[2] != strconv.Itoa(container.SlotSize) {
			t.Errorf("runner %d of %s: uid_map %q, want 0 %d %d", st.PID, spec.ID, m, ids.UID, container.SlotSize)
		}
		// Its root and PID namespace, seen from the host (vmroot.go).
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root", st.PID))
		must(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := []string{"dev", "proc", "rootfs", "vm"}; !slices.Equal(names, want) {
			t.Errorf("runner %d of %s: its root holds %q, want %q", st.PID, spec.ID, names, want)
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", st.PID)); ns == "" || ns == hostPidNS {
			t.Errorf("runner %d of %s: PID namespace %q, want one of its own (msbd's is %s)", st.PID, spec.ID, ns, hostPidNS)
		}
		return spec.ID, ids, st.PID
	}
	a, idsA, pidA := start(d, true)
	b, idsB, pidB := start(d, true)
	if idsA.UID == idsB.UID || idsA.GID == idsB.GID || idsA.UID == d.opts.HostUID || idsB.UID == d.opts.HostUID {
		t.Fatalf("sandboxes %s and %s got host ids %+v and %+v: want two ranges of their own, neither the shared one (%d)", a, b, idsA, idsB, d.opts.HostUID)
	}

	// As runner A's host uid and gid (what a VMM escaped from its guest
	// would be): its own runner and files yes, B's no.
	asA := func(args ...string) error {
		cmd := exec.Command("/bin/busybox", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: idsA.UID, Gid: idsA.GID, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := asA("kill", "-0", strconv.Itoa(pidA)); err != nil {
		t.Errorf("uid %d cannot signal its own runner %d: %v (the check below would prove nothing)", idsA.UID, pidA, err)
	}
	if err := asA("kill", "-0", strconv.Itoa(pidB)); err == nil {
		t.Errorf("uid %d (sandbox %s) can signal sandbox %s's runner %d", idsA.UID, a, b, pidB)
	}
	if err := asA("cat", d.ConsolePath(a)); err != nil {
		t.Errorf("uid %d cannot read its own console: %v (the check below would prove nothing)", idsA.UID, err)
	}
	if err := asA("cat", d.ConsolePath(b)); err == nil {
		t.Errorf("uid %d (sandbox %s) reads sandbox %s's console", idsA.UID, a, b)
	}
	if err := asA("ls", filepath.Join(d.host.Rootfs(b), "etc")); err == nil {
		t.Errorf("uid %d (sandbox %s) lists sandbox %s's root", idsA.UID, a, b)
	}

	// A reopened driver (msbd restarted, the runners adopted) finds the
	// records: a new sandbox gets a third range; a purge frees A's.
	d2, err := New(d.opts)
	must(t, err)
	_, idsC, _ := start(d2, false)
	if idsC.UID == idsA.UID || idsC.UID == idsB.UID {
		t.Errorf("after a reopen, a new sandbox got %+v, already A's %+v or B's %+v", idsC, idsA, idsB)
	}
	if st, err := d2.State(ctx, a); err != nil || st.PID != pidA {
		t.Errorf("reopened driver: A's state %+v, %v: want its runner %d adopted", st, err, pidA)
	}
	must(t, d2.Delete(ctx, a, true))
	if _, idsD, _ := start(d2, false); idsD.UID != idsA.UID {
		t.Errorf("after purging A (%d), a new sandbox got %d: want A's freed range (the lowest free)", idsA.UID, idsD.UID)
	}
}

// TestSharedIDRanges checks that a krun driver given the container
// driver's allocator never hands out a slot a container sandbox holds.
func TestSharedIDRanges(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc not found: no container driver to share ranges with")
	}
	si := newStandIn(t)
	base := tempDir(t)
	state := filepath.Join(base, "state")
	ctr, err := container.New(container.Options{StateDir: state})
	if err != nil {
		t.Skip("container driver:", err)
	}
	if why := ctr.SharedIDReason(); why != "" {
		t.Skip("sandboxes share one host id range here:", why)
	}
	// A container sandbox's record, as its Create leaves it.
	layers := busyboxLayers(t, base)
	agentPath := agenttest.Build(t)
	ctx := context.Background()
	cspec := vmdriver.Spec{ID: randomID(), Layers: layers, AgentPath: agentPath, Args: []string{"true"}, Env: []string{"PATH=/bin"}}
	must(t, ctr.Create(ctx, cspec))
	t.Cleanup(func() { ctr.Delete(ctx, cspec.ID, true) })
	b, err := os.ReadFile(filepath.Join(ctr.SandboxDir(cspec.ID), "ids.json"))
	must(t, err)

	self, err := os.Executable()
	must(t, err)
	d, err := New(Options{StateDir: state, Library: si.lib, KVMDevice: si.kvm, RunnerPath: self, IDRanges: ctr.IDRanges()})
	must(t, err)
	spec := vmdriver.Spec{ID: randomID(), Layers: layers, AgentPath: agentPath, Args: []string{"true"}, Env: []string{"PATH=/bin"}}
	must(t, d.Create(ctx, spec))
	t.Cleanup(func() { d.Delete(ctx, spec.ID, true) })
	ids, _, err := d.host.IDs(spec.ID)
	must(t, err)
	if strings.Contains(string(b), fmt.Sprintf(`"uid":%d,`, ids.UID)) {
		t.Errorf("the microVM got host uid %d, the container sandbox's (%s)", ids.UID, b)
	}
	// And the other way round: the container driver counts the microVM's.
	cspec2 := cspec
	cspec2.ID = randomID()
	must(t, ctr.Create(ctx, cspec2))
	t.Cleanup(func() { ctr.Delete(ctx, cspec2.ID, true) })
	b2, err := os.ReadFile(filepath.Join(ctr.SandboxDir(cspec2.ID), "ids.json"))
	must(t, err)
	if strings.Contains(string(b2), fmt.Sprintf(`"uid":%d,`, ids.UID)) {
		t.Errorf("a container sandbox got host uid %d, the microVM's (%s)", ids.UID, b2)
	}
}
