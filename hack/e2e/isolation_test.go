package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildHog builds testdata/hog, static, into a directory every host user
// and sandbox can read, which a sandbox mounts read-only at /hog.
func buildHog(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "msbhog")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hog"), "./hack/e2e/testdata/hog")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building hog: %v\n%s", err, out)
	}
	return dir
}

// hostProbe runs `hog probe` on the host as uid:gid (0: as root).
func hostProbe(t *testing.T, hog string, uid uint32, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(hog, "hog"), append([]string{"probe"}, args...)...)
	if len(args) > 0 {
		cmd = exec.Command(args[0], args[1:]...)
	}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

const allOK = "inotify ok; mqueue ok; signals ok"

// TestSandboxCannotExhaustHostUserBudgets: a sandbox that takes every
// inotify instance, message queue byte and queued signal it can takes them
// from its own host uid's budgets: host root and a second sandbox can still
// have them.
func TestSandboxCannotExhaustHostUserBudgets(t *testing.T) {
	d := startDaemon(t)
	hog := buildHog(t)
	// Control: the probe works here before anything holds the budgets.
	if out, err := hostProbe(t, hog, 0); err != nil || out != allOK {
		t.Skipf("host root cannot take one of each before the test (%v): %s", err, out)
	}
	vol := "  volumes: [{hostPath: " + hog + ", mountPath: /hog, readOnly: true}]\n"
	d.apply(sandboxYAML("hog", vol, "/hog/hog", "hold", "/tmp/held"))
	d.apply(sandboxYAML("other", vol, "sleep", "1000"))
	d.must("wait", "sandbox/hog", "sandbox/other", "--for=condition=Ready", "--timeout=60s")
	var held string
	waitFor(t, 20*time.Second, "the hog to hold everything", func() bool {
		out, _, code := d.ctl("exec", "hog", "--", "cat", "/tmp/held")
		held = out
		return code == 0 && strings.Count(out, "\n") == 3
	})
	t.Logf("held in sandbox hog:\n%s", held)
	// Each was taken until the kernel refused: the hog did reach its limits.
	for _, kind := range []string{"inotify", "mqueue", "signals"} {
		var n int
		var rest string
		for _, l := range strings.Split(held, "\n") {
			if f := strings.SplitN(l, " ", 3); len(f) == 3 && f[0] == kind {
				n, _ = strconv.Atoi(f[1])
				rest = f[2]
			}
		}
		if n == 0 || rest == "<nil>" {
			t.Errorf("%s: held %d (%s): want some, stopped by a limit", kind, n, rest)
		}
	}
	if out, err := hostProbe(t, hog, 0); err != nil || out != allOK {
		t.Errorf("host root while sandbox hog holds its budgets: %v %q, want %q", err, out, allOK)
	}
	if out, _, code := d.ctl("exec", "other", "--", "/hog/hog", "probe"); code != 0 || strings.TrimSpace(out) != allOK {
		t.Errorf("sandbox other while sandbox hog holds its budgets: exit %d %q, want %q", code, out, allOK)
	}
	// The hog itself is at its limits (the probe in its own sandbox fails).
	if out, _, _ := d.ctl("exec", "hog", "--", "/hog/hog", "probe"); strings.Contains(out, "inotify ok") {
		t.Errorf("a second process in sandbox hog still got an inotify instance: %q", out)
	}
}

// TestSandboxesHaveTheirOwnHostUIDs: two sandboxes run as different host
// uids, so a set-id program one plants through a read-write volume (run by
// any host user) reads its own writable layer and not the other's.
func TestSandboxesHaveTheirOwnHostUIDs(t *testing.T) {
	d := startDaemon(t)
	hog := buildHog(t)
	plant, err := os.MkdirTemp("", "msbplant")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(plant) })
	os.Chmod(plant, 0o777)
	// Without a disk the writable layer is a directory of the sandbox's
	// own (owned by its root, below a directory its group may search); with
	// one it sits where only host root may enter, which proves nothing
	// about the uids.
	vol := "  volumes: [{hostPath: " + hog + ", mountPath: /hog, readOnly: true}, {hostPath: " + plant + ", mountPath: /plant}]\n  resources: {disk: \"0\"}\n"
	for _, n := range []string{"a", "b"} {
		d.apply(sandboxYAML(n, vol, "sh", "-c",
			"echo secret-"+n+" > /root/secret && chmod 600 /root/secret && cp /hog/hog /plant/hog-"+n+" && chmod 6755 /plant/hog-"+n+" && exec sleep 1000"))
	}
	d.must("wait", "sandbox/a", "sandbox/b", "--for=condition=Ready", "--timeout=60s")
	waitFor(t, 20*time.Second, "both set-id programs planted", func() bool {
		for _, n := range []string{"a", "b"} {
			if fi, err := os.Stat(filepath.Join(plant, "hog-"+n)); err != nil || fi.Mode()&os.ModeSetuid == 0 {
				return false
			}
		}
		return true
	})
	owner := func(p string) uint32 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	ua, ub := owner(filepath.Join(plant, "hog-a")), owner(filepath.Join(plant, "hog-b"))
	if ua == ub || ua == 0 {
		t.Fatalf("the sandboxes' roots are host uids %d and %d: want two different non-root uids", ua, ub)
	}
	secret := func(name string) string {
		uid, _ := field(d.sandbox(name), "metadata.uid").(string)
		return filepath.Join(d.stateDir, "sandboxes", uid, "upper/root/secret")
	}
	const nobody = 65534
	run := func(prog, file string) (string, error) {
		return hostProbe(t, hog, nobody, filepath.Join(plant, prog), "read", file)
	}
	// Control: the planted program does act as its sandbox's root.
	if out, err := run("hog-a", secret("a")); err != nil || out != "secret-a" {
		t.Fatalf("a's set-id program reading a's layer: %v %q (the plant does not work)", err, out)
	}
	for _, c := range [][2]string{{"hog-a", "b"}, {"hog-b", "a"}} {
		if out, err := run(c[0], secret(c[1])); err == nil || strings.Contains(out, "secret-") {
			t.Errorf("%s read sandbox %s's writable layer: %q", c[0], c[1], out)
		}
	}
}

// TestSharedIDRangeIsNeverSilent: an msbd whose --uid-size holds a single
// range runs sandboxes in it, and says so in msbctl info and in a Warning
// event of every such sandbox; one with room says each has its own.
func TestSharedIDRangeIsNeverSilent(t *testing.T) {
	d := startDaemon(t, "--uid-size", "65536")
	if info := d.must("info"); !strings.Contains(info, "shared by all sandboxes") {
		t.Errorf("msbctl info does not say the range is shared:\n%s", info)
	}
	d.apply(sandboxYAML("shared", "", "sleep", "1000"))
	d.must("wait", "sandbox/shared", "--for=condition=Ready", "--timeout=60s")
	waitFor(t, 10*time.Second, "a SharedIDRange Warning event", func() bool {
		return strings.Contains(d.must("get", "events"), "SharedIDRange")
	})
	if got := d.must("exec", "shared", "--", "cat", "/proc/self/uid_map"); !strings.Contains(strings.Join(strings.Fields(got), " "), "0 2000000000 65536") {
		t.Errorf("uid_map in the shared range: %q", got)
	}

	own := startDaemon(t)
	if info := own.must("info"); !strings.Contains(info, "one per sandbox") {
		t.Errorf("msbctl info does not say each sandbox has its own range:\n%s", info)
	}
}

// loopDevices lists the attached loop devices as "loopN: backing file"
// (sandboxes' disks are loop-mounted files in their directories).
func loopDevices() []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		dev := filepath.Base(filepath.Dir(filepath.Dir(f)))
		out = append(out, dev+": "+strings.TrimSpace(string(b)))
	}
	return out
}

// dirBytes is the space the files under dir take on dir's filesystem
// (allocated blocks; what is mounted below dir is not counted).
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		t.Fatal(err)
	}
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Dev != root.Dev {
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n += st.Blocks * 512
		return nil
	})
	return n
}

// TestDiskQuota: a sandbox's writable layer and agent directory together
// hold at most spec.resources.disk: a write past it fails inside with
// ENOSPC, the state directory grows by less than the limit, describe shows
// the use, and deleting the sandbox leaves no loop device.
func TestDiskQuota(t *testing.T) {
	d := startDaemon(t)
	hog := buildHog(t)
	if info := d.must("info"); !strings.Contains(info, "an ext4 on a loop device per sandbox (default 10Gi)") {
		t.Errorf("msbctl info does not say how disks are bounded:\n%s", info)
	}
	vol := "  volumes: [{hostPath: " + hog + ", mountPath: /hog, readOnly: true}]\n"
	const limit = 64 << 20
	d.apply(sandboxYAML("disk", vol+"  resources: {disk: 64Mi}\n", "sleep", "1000"))
	d.apply(sandboxYAML("free", vol+"  resources: {disk: \"0\"}\n", "sleep", "1000"))
	d.must("wait", "sandbox/disk", "sandbox/free", "--for=condition=Ready", "--timeout=60s")
	before := dirBytes(t, d.stateDir)

	out := d.must("exec", "disk", "--", "/hog/hog", "fill", "/root/big")
	if !strings.Contains(out, "no space left on device") {
		t.Fatalf("filling the writable layer: %q, want ENOSPC", out)
	}
	var wrote int64
	fmt.Sscanf(strings.TrimPrefix(out, "wrote "), "%d", &wrote)
	if wrote > limit || wrote < limit/2 {
		t.Errorf("wrote %d bytes before ENOSPC, want at most the limit %d (and most of it)", wrote, limit)
	}
	// The agent directory is on the same disk: full too (what little
	// delayed allocation gives back aside).
	out = d.must("exec", "disk", "--", "/hog/hog", "fill", "/.msb/big")
	var more int64
	fmt.Sscanf(strings.TrimPrefix(out, "wrote "), "%d", &more)
	if !strings.Contains(out, "no space left on device") || wrote+more > limit {
		t.Errorf("filling /.msb after the writable layer: %q (layer %d bytes), want ENOSPC within the limit", out, wrote)
	}
	// Writes land on the state dir's filesystem (the sparse disk file)
	// but never more than the limit.
	if grew := dirBytes(t, d.stateDir) - before; grew >= limit {
		t.Errorf("the state directory grew by %d bytes, not less than the limit %d", grew, limit)
	}
	// An unlimited sandbox is not bounded by that: it writes more.
	if out := d.must("exec", "free", "--", "sh", "-c", "head -c 80000000 /dev/zero > /root/big && echo ok"); strings.TrimSpace(out) != "ok" {
		t.Errorf("unlimited sandbox writing 80 MB: %q", out)
	}
	waitFor(t, 40*time.Second, "status.disk to show the use", func() bool {
		used, _ := field(d.sandbox("disk"), "status.disk.usedBytes").(float64)
		return used >= limit/2
	})
	if desc := d.must("describe", "sandbox", "disk"); !strings.Contains(desc, "used of 64.0MiB") || !strings.Contains(desc, "disk=64Mi") {
		t.Errorf("describe does not show the disk's use against its limit:\n%s", desc)
	}
	uid, _ := field(d.sandbox("disk"), "metadata.uid").(string)
	d.must("delete", "sandbox", "disk", "--wait", "--timeout=60s")
	for _, l := range loopDevices() {
		if strings.Contains(l, uid) {
			t.Errorf("loop device left after delete: %s", l)
		}
	}
}
