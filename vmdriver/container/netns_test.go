package container

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testNetNS makes a named network namespace (ip netns add), runs setup
// commands in it (each an `ip` argument list), and deletes it at the end of
// the test. It returns the nsfs file's path.
func testNetNS(t *testing.T, setup ...[]string) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not found: cannot make a network namespace to join")
	}
	name := "msbtest-" + randomID()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	for _, args := range setup {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", name, args, err, out)
		}
	}
	return filepath.Join("/run/netns", name)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	return st.Ino
}

// TestJoinNetNS: with Spec.NetNSPath the sandbox lives in that namespace
// (its creator's interfaces, its loopback left as the creator set it), and
// Delete leaves the namespace to its creator.
func TestJoinNetNS(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ns := testNetNS(t,
		[]string{"link", "add", "msbt0", "type", "veth", "peer", "name", "msbt1"},
		[]string{"link", "set", "lo", "up"},
	)
	spec := f.spec(`cat /proc/net/dev > /.msb/netdev; ls /sys/class/net > /.msb/sysnet; touch /.msb/done; exec sleep 1000`)
	spec.NetNSPath = ns
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	st, err := f.d.State(ctx, spec.ID)
	must(t, err)
	if got, want := inode(t, "/proc/"+strconv.Itoa(st.PID)+"/ns/net"), inode(t, ns); got != want {
		t.Errorf("the sandbox's network namespace is inode %d, the one to join %d", got, want)
	}
	agentDir := f.d.agentDir(spec.ID)
	waitFor(t, filepath.Join(agentDir, "done"), 10*time.Second)
	if netdev, _ := os.ReadFile(filepath.Join(agentDir, "netdev")); !strings.Contains(string(netdev), "msbt0") {
		t.Errorf("the sandbox does not see the namespace's interface: %s", netdev)
	}
	// Its sysfs is the namespace's too (mounted by the driver: runc cannot).
	if sysnet, _ := os.ReadFile(filepath.Join(agentDir, "sysnet")); strings.Join(strings.Fields(string(sysnet)), " ") != "lo msbt0 msbt1" {
		t.Errorf("/sys/class/net in the sandbox: %q, want lo msbt0 msbt1", sysnet)
	}
	// The namespace belongs to the host's user namespace, so runc runs
	// in it rather than joining it after the sandbox's user namespace.
	b, err := os.ReadFile(filepath.Join(f.d.bundleDir(spec.ID), "config.json"))
	must(t, err)
	if strings.Contains(string(b), `"type": "network"`) {
		t.Errorf("bundle names a network namespace: runc could not enter it")
	}
	// A Delete without purge unmounts that sysfs too; Start mounts it again.
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second))
	must(t, f.d.Delete(ctx, spec.ID, false))
	if ok, _ := isMountPoint(f.d.sysfsDir(spec.ID)); ok {
		t.Errorf("sysfs still mounted after Delete(purge=false)")
	}
	must(t, os.Remove(filepath.Join(agentDir, "done")))
	must(t, f.d.Start(ctx, spec.ID))
	waitFor(t, filepath.Join(agentDir, "done"), 10*time.Second)
	if sysnet, _ := os.ReadFile(filepath.Join(agentDir, "sysnet")); !strings.Contains(string(sysnet), "msbt0") {
		t.Errorf("/sys/class/net in the second run: %q", sysnet)
	}
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second))
	must(t, f.d.Delete(ctx, spec.ID, true))
	assertGone(t, f.d, spec.ID)
	if err := checkNetNS(ns); err != nil {
		t.Errorf("after Delete the namespace is gone or changed: %v", err)
	}
}

// TestJoinedNetNSLoopbackUntouched: the driver brings lo up only in a
// namespace it made; a joined one is its creator's to set up.
func TestJoinedNetNSLoopbackUntouched(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ns := testNetNS(t)
	spec := f.spec("exec sleep 1000")
	spec.NetNSPath = ns
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	out, err := exec.Command("ip", "-n", filepath.Base(ns), "-o", "link", "show", "lo").CombinedOutput()
	must(t, err)
	if regexp.MustCompile(`[<,]UP[,>]`).Match(out) {
		t.Errorf("lo in the joined namespace was brought up: %s", out)
	}
	must(t, f.d.Stop(ctx, spec.ID, 0))
}

// TestNetNSValidation: a relative path is refused by Create; what is not a
// network namespace by Start (the namespace's creator may make it while
// the sandbox is prepared), and nothing runs.
func TestNetNSValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	regular := filepath.Join(f.base, "not-a-namespace")
	must(t, os.WriteFile(regular, nil, 0o600))
	spec := f.spec("true")
	spec.NetNSPath = "run/netns/x"
	if err := f.d.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative NetNSPath: Create = %v, want an error containing %q", err, "not an absolute path")
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(f.base, "missing"), "no such file"},
		{regular, "not a namespace file (nsfs)"},
		{"/proc/self/ns/uts", "namespace of another type"},
	} {
		spec := f.spec("true")
		spec.NetNSPath = c.path
		must(t, f.d.Create(ctx, spec))
		if err := f.d.Start(ctx, spec.ID); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NetNSPath %s: Start = %v, want an error containing %q", c.path, err, c.want)
		}
		if st, err := f.d.State(ctx, spec.ID); err != nil || st.Status.Alive() {
			t.Errorf("NetNSPath %s: State = %+v, %v", c.path, st, err)
		}
	}
}

// TestJoinedNetNSGoneAtStart: a namespace removed between Create and Start
// (a reboot) fails the Start with the driver's words, not runc's.
func TestJoinedNetNSGoneAtStart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dir := t.TempDir()
	ns := filepath.Join(dir, "net")
	must(t, os.WriteFile(ns, nil, 0o600))
	must(t, unix.Mount("/proc/self/ns/net", ns, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(ns, unix.MNT_DETACH) })
	spec := f.spec("true")
	spec.NetNSPath = ns
	must(t, f.d.Create(ctx, spec))
	must(t, unix.Unmount(ns, 0))
	err := f.d.Start(ctx, spec.ID)
	if err == nil || !strings.Contains(err.Error(), "not a namespace file") {
		t.Fatalf("Start after the namespace went: %v", err)
	}
	if st, err := f.d.State(ctx, spec.ID); err != nil || st.Status.Alive() {
		t.Errorf("State = %+v, %v", st, err)
	}
}
