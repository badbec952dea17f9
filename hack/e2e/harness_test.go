// Package e2e holds end-to-end tests: they build the real msbd, msbctl and
// msb-agent binaries, run msbd against a temporary state directory and drive
// it only through msbctl, as a user would.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"msb.dev/msb/images/imagetest"
	"msb.dev/msb/vmdriver/container"
)

var (
	stateDirsMu sync.Mutex
	stateDirs   []string // every state dir a daemon of this suite used

	binDir   string // msbd, msbctl, msb-agent
	imageDir string // busybox OCI layout, tag "latest"
	skipWhy  string
)

func TestMain(m *testing.M) {
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipWhy = "end-to-end tests need root (namespaces, mounts, cgroups)"
	case lookPath("runc") == "":
		skipWhy = "runc not installed (apt-get install runc)"
	}
	if skipWhy != "" {
		fmt.Println("e2e: skipping:", skipWhy)
		return m.Run()
	}
	sweepDeadNetns("msbe2e-", "msbinet-")
	tmp, err := os.MkdirTemp("", "msbe2e-bin")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	root, _ := filepath.Abs("../..")
	build := func(env []string, args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			panic(fmt.Sprintf("go %s: %v\n%s", strings.Join(args, " "), err, out))
		}
	}
	build(nil, "build", "-o", binDir+"/", "./cmd/msbd")
	// msbctl and the agent need no cgo; static binaries start faster.
	build([]string{"CGO_ENABLED=0"}, "build", "-o", binDir+"/", "./cmd/msbctl")
	// As shipped: stripped, a third smaller (one copy per host, paged in per sandbox).
	build([]string{"CGO_ENABLED=0"}, "build", "-ldflags=-s -w", "-o", binDir+"/", "./cmd/msb-agent")
	img, err := imagetest.BusyboxImage()
	if err != nil {
		panic(err)
	}
	imageDir = filepath.Join(tmp, "busybox")
	if err := imagetest.WriteOCILayout(imageDir, img, "latest"); err != nil {
		panic(err)
	}
	before := leakSnapshot()
	code := m.Run()
	if leaks := leakDiff(before, leakSnapshot()); len(leaks) > 0 {
		fmt.Println("e2e: FAIL: left behind after the suite:")
		for _, l := range leaks {
			fmt.Println("  ", l)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

// leakSnapshot lists what the suite could leave behind: msb cgroups, mounts
// and temp dirs, and processes of msbd, msb-agent or sandboxes.
func leakSnapshot() map[string]bool {
	s := map[string]bool{}
	stateDirsMu.Lock()
	dirs := append([]string(nil), stateDirs...)
	stateDirsMu.Unlock()
	// Only what this suite's own daemons made: other test runs may be busy
	// on the same machine.
	mine := func(text string) bool {
		for _, sd := range dirs {
			if strings.Contains(text, filepath.Dir(sd)) {
				return true
			}
		}
		return false
	}
	for _, sd := range dirs {
		prefix := container.CgroupPrefix(sd)
		cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + prefix + "*")
		cg2, _ := filepath.Glob("/sys/fs/cgroup/" + prefix + "*")
		for _, c := range append(cg, cg2...) {
			s["cgroup "+c] = true
		}
		if _, err := os.Stat(filepath.Dir(sd)); err == nil {
			s["dir "+filepath.Dir(sd)] = true
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if mine(l) {
			s["mount "+l] = true
		}
	}
	for _, l := range loopDevices() {
		if mine(l) {
			s["loop device "+l] = true
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		root, _ := os.Readlink(filepath.Join(filepath.Dir(p), "root"))
		if mine(cmd) || mine(root) {
			s["process "+filepath.Dir(p)+": "+cmd] = true
		}
	}
	return s
}

func leakDiff(before, after map[string]bool) []string {
	var out []string
	for k := range after {
		if !before[k] {
			out = append(out, k)
		}
	}
	return out
}

func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

func requireRoot(t testing.TB) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

// daemon is one running msbd with its own state dir and socket.
type daemon struct {
	t        testing.TB
	netns    string // the network namespace msbd runs in
	stateDir string
	socket   string
	args     []string
	cmd      *exec.Cmd
	logBuf   *bytes.Buffer
	done     chan struct{}
}

// startDaemon runs msbd on a fresh state dir; cleanup deletes every sandbox,
// stops msbd and checks nothing of it is left behind.
func startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("/tmp", "msbe2e")
	if err != nil {
		t.Fatal(err)
	}
	// Sandbox users (mapped uids) must be able to traverse to their rootfs.
	os.Chmod(dir, 0o711)
	d := &daemon{t: t, stateDir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "msbd.sock"), netns: newNetns(t, "msbe2e-")}
	stateDirsMu.Lock()
	stateDirs = append(stateDirs, d.stateDir)
	stateDirsMu.Unlock()
	d.args = append([]string{"--state-dir", d.stateDir, "--socket", d.socket, "--log-level", "debug", "--stop-grace", "2s"}, extra...)
	// Registered before the start so a failed start cleans up too.
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cleanup()
		}
		if t.Failed() && d.logBuf != nil {
			t.Logf("msbd log:\n%s", d.logBuf.String())
		}
		// Whatever happened above, the netns mount must not outlive the test.
		syscall.Unmount(filepath.Join(d.stateDir, "netns"), syscall.MNT_DETACH)
		os.RemoveAll(dir)
	})
	d.start()
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.logBuf = &bytes.Buffer{}
	d.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + d.netns, "--", filepath.Join(binDir, "msbd")}, d.args...)...)
	d.cmd.Stdout = d.logBuf
	d.cmd.Stderr = d.logBuf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, _, code := d.ctl("version"); code == 0 {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("msbd exited during start:\n%s", d.logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("msbd did not answer within 20s:\n%s", d.logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill9 kills msbd abruptly, as a crash would.
func (d *daemon) kill9() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// stop sends SIGTERM and waits.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		d.t.Errorf("msbd did not stop within 20s of SIGTERM")
		d.kill9()
	}
}

func (d *daemon) cleanup() {
	select {
	case <-d.done:
		// msbd is down (a test crashed it): if it left sandboxes, start it
		// again so they are deleted the way users delete them.
		if ents, _ := os.ReadDir(filepath.Join(d.stateDir, "sandboxes")); len(ents) == 0 {
			for _, l := range d.loopsLeft() {
				d.t.Errorf("loop device left: %s", l)
			}
			return
		}
		d.start()
	default:
	}
	_, stderr, code := d.ctl("delete", "sandboxes", "--all", "--wait", "--timeout=60s")
	if code != 0 && !strings.Contains(stderr, "No resources") {
		// Fall back to deleting one by one.
		out, _, _ := d.ctl("get", "sb", "-A", "-o", "name")
		for _, n := range strings.Fields(out) {
			d.ctl("delete", n, "--wait", "--timeout=60s")
		}
	}
	d.stop()
	d.assertNothingLeft()
}

// assertNothingLeft checks that no mount remains under the state dir and no
// runc container or sandbox directory is left.
func (d *daemon) assertNothingLeft() {
	d.t.Helper()
	// msbd makes STATE/netns a mount point of its own (for the sandboxes'
	// namespace files, which outlive it); with no sandbox left it is the
	// one mount an operator removes with the state dir.
	netnsDir := filepath.Join(d.stateDir, "netns")
	if ents, _ := os.ReadDir(netnsDir); len(ents) > 0 {
		for _, e := range ents {
			d.t.Errorf("network namespace file left: %s", e.Name())
		}
	}
	syscall.Unmount(netnsDir, syscall.MNT_DETACH)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, d.stateDir) {
			d.t.Errorf("mount left under the state dir: %s", line)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(d.stateDir, "sandboxes"))
	for _, e := range ents {
		d.t.Errorf("sandbox directory left: %s", e.Name())
	}
	for _, l := range d.loopsLeft() {
		d.t.Errorf("loop device left: %s", l)
	}
	out, _ := exec.Command("runc", "--root", filepath.Join(d.stateDir, "runc"), "list", "-q").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		d.t.Errorf("runc containers left: %s", s)
	}
}

// loopsLeft returns the loop devices of files under the state dir, but for
// the disks msbd keeps ready while it runs (STATE/disk-pool). A loop
// device detaches (autoclear) shortly after the last mount of it goes, so
// this waits a little for them to go.
func (d *daemon) loopsLeft() []string {
	pool := filepath.Join(d.stateDir, "disk-pool") + "/"
	deadline := time.Now().Add(10 * time.Second)
	for {
		running := d.cmd != nil
		select {
		case <-d.done:
			running = false
		default:
		}
		var left []string
		for _, l := range loopDevices() {
			if strings.Contains(l, d.stateDir) && !(running && strings.Contains(l, pool)) {
				left = append(left, l)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctl runs msbctl against this daemon.
func (d *daemon) ctl(args ...string) (stdout, stderr string, code int) {
	return d.ctlIn(nil, args...)
}

func (d *daemon) ctlIn(stdin []byte, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "msbctl"), args...)
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return o.String(), e.String(), code
}

// must runs msbctl and fails the test on a non-zero exit.
func (d *daemon) must(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.ctl(args...)
	if code != 0 {
		d.t.Fatalf("msbctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// apply writes manifest to a file and applies it.
func (d *daemon) apply(manifest string) string {
	d.t.Helper()
	f := filepath.Join(d.t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return d.must("apply", "-f", f)
}

// sandbox fetches a Sandbox as JSON into a generic map.
func (d *daemon) sandbox(name string) map[string]any {
	d.t.Helper()
	out := d.must("get", "sandbox", name, "-o", "json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		d.t.Fatalf("get -o json: %v\n%s", err, out)
	}
	return m
}

// field walks a dotted path in a decoded JSON object.
func field(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sandboxYAML renders a busybox Sandbox manifest.
func sandboxYAML(name string, extra string, command ...string) string {
	q := make([]string, len(command))
	for i, c := range command {
		b, _ := json.Marshal(c)
		q[i] = string(b)
	}
	return fmt.Sprintf(`apiVersion: msb.dev/v1alpha1
kind: Sandbox
metadata:
  name: %s
  labels: {app: e2e}
spec:
  image: oci:%s:latest
  command: [%s]
%s`, name, imageDir, strings.Join(q, ", "), extra)
}
