package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/vmdriver/container"
)

// TestSandboxLifecycle walks the main path a user takes: apply, wait Ready,
// exec, logs, describe, delete --wait, and checks isolation along the way.
func TestSandboxLifecycle(t *testing.T) {
	d := startDaemon(t)
	out := d.apply(sandboxYAML("web", `  resources: {cpus: 1, memory: 128Mi, pids: 64}
  env: [{name: GREETING, value: hello}]
`, "sh", "-c", "echo started-$GREETING; echo to-stderr >&2; exec sleep 1000"))
	if strings.TrimSpace(out) != "sandbox/web created" {
		t.Fatalf("apply printed %q", out)
	}
	d.must("wait", "sandbox/web", "--for=condition=Ready", "--timeout=60s")

	// exec: stdout and stderr separate, byte for byte; exit code propagated.
	stdout, stderr, code := d.ctl("exec", "web", "--", "sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 42")
	if stdout != "out\n" || stderr != "err\n" || code != 42 {
		t.Fatalf("exec: stdout %q stderr %q code %d; want out/err/42", stdout, stderr, code)
	}
	// The command is found through the image's PATH; env from the spec.
	if got := d.must("exec", "web", "--", "sh", "-c", "echo $GREETING"); got != "hello\n" {
		t.Fatalf("exec echo $GREETING = %q", got)
	}
	// stdin with -i.
	if got, _, _ := d.ctlIn([]byte("piped"), "exec", "-i", "web", "--", "cat"); got != "piped" {
		t.Fatalf("exec -i cat = %q", got)
	}
	if _, _, code := d.ctl("exec", "web", "--", "no-such-command"); code != 127 {
		t.Fatalf("exec of a missing command exited %d, want 127", code)
	}

	// Isolation is observable.
	status := d.must("exec", "web", "--", "cat", "/proc/1/status")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/1/status in the sandbox lacks %q:\n%s", want, status)
		}
	}
	// The filter is the default profile, and exec'd processes carry it:
	// unshare(2) is for CAP_SYS_ADMIN holders only there, although the
	// kernel would let the sandbox's root make a nested user namespace.
	if out, errOut, code := d.ctl("exec", "web", "--", "unshare", "-U", "true"); code == 0 || !strings.Contains(errOut, "not permitted") {
		t.Errorf("unshare -U in the sandbox: exit %d, stdout %q, stderr %q; want refused by seccomp (Operation not permitted)", code, out, errOut)
	}
	if got := d.must("exec", "web", "--", "grep", "Seccomp:", "/proc/self/status"); got != "Seccomp:\t2\n" {
		t.Errorf("an exec'd process has %q, want Seccomp:\\t2", got)
	}
	// The main command started with lo already up, and without NET_ADMIN.
	if got := d.must("exec", "web", "--", "cat", "/sys/class/net/lo/flags"); got != "0x9\n" {
		t.Errorf("lo flags in the sandbox = %q, want 0x9 (up, loopback)", got)
	}
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "CapBnd:") {
			bnd, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(l, "CapBnd:")), 16, 64)
			for _, c := range []struct {
				bit  uint
				name string
			}{{12, "NET_ADMIN"}, {13, "NET_RAW"}, {21, "SYS_ADMIN"}, {27, "MKNOD"}, {16, "SYS_MODULE"}, {19, "SYS_PTRACE"}} {
				if bnd&(1<<c.bit) != 0 {
					t.Errorf("sandbox bounding set holds CAP_%s", c.name)
				}
			}
		}
	}
	sb := d.sandbox("web")
	if iso := field(sb, "status.isolation"); iso != "container" {
		t.Errorf("status.isolation = %v, want container", iso)
	}
	if dg, _ := field(sb, "status.imageDigest").(string); !strings.HasPrefix(dg, "sha256:") {
		t.Errorf("status.imageDigest = %q, want sha256:...", dg)
	}
	pid := int(field(sb, "status.pid").(float64))
	if uid := hostUID(t, pid); uid == 0 {
		t.Errorf("sandbox init runs as host uid 0; want an unprivileged mapped uid")
	}
	if got := d.must("exec", "web", "--", "id", "-u"); got != "0\n" {
		t.Errorf("inside the sandbox id -u = %q, want 0 (mapped root)", got)
	}
	// Root in the sandbox can write anywhere the image allows.
	d.must("exec", "web", "--", "sh", "-c", "echo x > /etc/newfile && echo y > /rootfile")

	// logs.
	waitFor(t, 10*time.Second, "logs", func() bool {
		out, _, _ := d.ctl("logs", "web")
		return strings.Contains(out, "started-hello") && strings.Contains(out, "to-stderr")
	})

	// describe shows the events of each step.
	desc := d.must("describe", "sandbox", "web")
	for _, want := range []string{"Pulled", "Created", "Started", "Ready"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe lacks %q:\n%s", want, desc)
		}
	}

	// delete --wait removes everything the sandbox owned.
	uid := field(sb, "metadata.uid").(string)
	d.must("delete", "sandbox", "web", "--wait", "--timeout=60s")
	if _, _, code := d.ctl("get", "sandbox", "web"); code == 0 {
		t.Fatalf("sandbox still exists after delete --wait")
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", uid)); !os.IsNotExist(err) {
		t.Errorf("sandbox directory still exists after delete: %v", err)
	}
	if processExists(pid) {
		t.Errorf("sandbox process %d still runs after delete", pid)
	}
	d.assertNothingLeft()
}

func hostUID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading status of sandbox pid %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			f := strings.Fields(l)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return -1
}

func processExists(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is gone for our purposes.
	s := string(data)
	i := strings.LastIndex(s, ")")
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestAdoptAfterKill9 crashes msbd with sandboxes running and checks the
// restarted msbd adopts the same processes instead of restarting them.
func TestAdoptAfterKill9(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("a1", "", "sleep", "1000") + "---\n" + sandboxYAML("a2", "", "sleep", "1000"))
	d.must("wait", "sandbox/a1", "sandbox/a2", "--for=condition=Ready", "--timeout=60s")
	pid1 := field(d.sandbox("a1"), "status.pid")
	pid2 := field(d.sandbox("a2"), "status.pid")
	d.kill9()
	d.start() // the stale socket must be replaced
	waitFor(t, 30*time.Second, "Adopted event", func() bool {
		out, _, _ := d.ctl("describe", "sandbox", "a1")
		return strings.Contains(out, "Adopted")
	})
	d.must("wait", "sandbox/a1", "sandbox/a2", "--for=condition=Ready", "--timeout=60s")
	if p := field(d.sandbox("a1"), "status.pid"); p != pid1 {
		t.Errorf("a1 pid %v after restart, want %v (adopted, not restarted)", p, pid1)
	}
	if p := field(d.sandbox("a2"), "status.pid"); p != pid2 {
		t.Errorf("a2 pid %v after restart, want %v", p, pid2)
	}
	if got := d.must("exec", "a1", "--", "echo", "still-here"); got != "still-here\n" {
		t.Errorf("exec after adoption = %q", got)
	}
	// A clean stop also leaves sandboxes running.
	d.stop()
	if !processExists(int(pid1.(float64))) {
		t.Errorf("SIGTERM of msbd stopped sandbox a1")
	}
	d.start()
	d.must("wait", "sandbox/a1", "--for=condition=Ready", "--timeout=60s")
}

// TestInvalidManifestsWriteNothing checks file:line errors and all-or-nothing apply.
func TestInvalidManifestsWriteNothing(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	good := sandboxYAML("good", "", "sleep", "10")
	bad := `apiVersion: msb.dev/v1alpha1
kind: Sandbox
metadata:
  name: bad
spec:
  image: oci:/x
  resources:
    memroy: 1Gi
`
	os.WriteFile(filepath.Join(dir, "a-good.yaml"), []byte(good), 0o644)
	os.WriteFile(filepath.Join(dir, "b-bad.yaml"), []byte(bad), 0o644)
	_, stderr, code := d.ctl("apply", "-f", dir)
	if code == 0 {
		t.Fatalf("apply of an invalid manifest succeeded")
	}
	if !strings.Contains(stderr, "b-bad.yaml:8: spec.resources.memroy: unknown field") {
		t.Errorf("error lacks file:line and field path:\n%s", stderr)
	}
	if out, _, _ := d.ctl("get", "sandboxes", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("an invalid apply wrote objects: %q", out)
	}
}

// TestReapplyUnchanged checks idempotent apply keeps resourceVersion.
func TestReapplyUnchanged(t *testing.T) {
	d := startDaemon(t)
	m := sandboxYAML("same", "", "sleep", "1000")
	d.apply(m)
	d.must("wait", "sandbox/same", "--for=condition=Ready", "--timeout=60s")
	// No resources in the spec: msbd's default limits apply.
	uid := field(d.sandbox("same"), "metadata.uid").(string)
	cg := container.CgroupPrefix(d.stateDir) + uid
	pidsMax := ""
	// The workload's own cgroup holds the limit where there is one (the
	// sandbox's holds it plus the agent's reserve).
	for _, p := range []string{"/sys/fs/cgroup/pids/" + cg + "/pids.max", "/sys/fs/cgroup/" + cg + "/pids.max", "/sys/fs/cgroup/pids/" + cg + "/workload/pids.max"} {
		if b, err := os.ReadFile(p); err == nil {
			pidsMax = strings.TrimSpace(string(b))
		}
	}
	if pidsMax != "4096" {
		t.Errorf("pids.max of a sandbox without limits = %q, want the default 4096", pidsMax)
	}
	rv := field(d.sandbox("same"), "metadata.resourceVersion")
	gen := field(d.sandbox("same"), "metadata.generation")
	if out := d.apply(m); strings.TrimSpace(out) != "sandbox/same unchanged" {
		t.Fatalf("re-apply printed %q, want unchanged", out)
	}
	time.Sleep(300 * time.Millisecond)
	if got := field(d.sandbox("same"), "metadata.resourceVersion"); got != rv {
		t.Errorf("resourceVersion %v after unchanged re-apply, want %v", got, rv)
	}
	// A label-only change is configured but keeps generation.
	if out := d.apply(strings.Replace(m, "app: e2e", "app: e2e2", 1)); strings.TrimSpace(out) != "sandbox/same configured" {
		t.Fatalf("apply of a changed manifest printed %q", out)
	}
	if got := field(d.sandbox("same"), "metadata.generation"); got != gen {
		t.Errorf("generation %v after a label change, want %v", got, gen)
	}
}

// TestRestartPolicies checks OnFailure restarts with backoff and Never ends Failed.
func TestRestartPolicies(t *testing.T) {
	d := startDaemon(t, "--restart-backoff", "200ms")
	d.apply(sandboxYAML("flaky", "  restartPolicy: OnFailure\n", "sh", "-c", "echo run; exit 3") +
		"---\n" + sandboxYAML("once", "  restartPolicy: Never\n", "sh", "-c", "exit 7") +
		"---\n" + sandboxYAML("ok", "  restartPolicy: OnFailure\n", "true"))
	waitFor(t, 60*time.Second, "flaky restartCount >= 2", func() bool {
		n, _ := field(d.sandbox("flaky"), "status.restartCount").(float64)
		return n >= 2
	})
	desc := d.must("describe", "sandbox", "flaky")
	if !strings.Contains(desc, "BackOff") {
		t.Errorf("describe of a restarting sandbox lacks BackOff:\n%s", desc)
	}
	waitFor(t, 30*time.Second, "once Failed", func() bool { return field(d.sandbox("once"), "status.phase") == "Failed" })
	if c := field(d.sandbox("once"), "status.exitCode"); c != float64(7) {
		t.Errorf("once exitCode = %v, want 7", c)
	}
	waitFor(t, 30*time.Second, "ok Succeeded", func() bool { return field(d.sandbox("ok"), "status.phase") == "Succeeded" })
	if n, _ := field(d.sandbox("ok"), "status.restartCount").(float64); n != 0 {
		t.Errorf("OnFailure restarted a command that exited 0 (%v restarts)", n)
	}
}

// TestSuspendKeepsWritableLayer writes a file, suspends, resumes and reads it.
func TestSuspendKeepsWritableLayer(t *testing.T) {
	d := startDaemon(t)
	m := sandboxYAML("sus", "", "sleep", "1000")
	d.apply(m)
	d.must("wait", "sandbox/sus", "--for=condition=Ready", "--timeout=60s")
	d.must("exec", "sus", "--", "sh", "-c", "echo kept > /root/state.txt")
	pid := int(field(d.sandbox("sus"), "status.pid").(float64))
	d.apply(m + "  operatingMode: Suspended\n")
	waitFor(t, 30*time.Second, "phase Suspended", func() bool { return field(d.sandbox("sus"), "status.phase") == "Suspended" })
	if processExists(pid) {
		t.Errorf("suspended sandbox still runs (pid %d)", pid)
	}
	d.apply(m)
	d.must("wait", "sandbox/sus", "--for=condition=Ready", "--timeout=60s")
	if got := d.must("exec", "sus", "--", "cat", "/root/state.txt"); got != "kept\n" {
		t.Errorf("file after suspend/resume = %q, want kept", got)
	}
}

// TestTTLExpires checks lifecycle.ttl stops the sandbox.
func TestTTLExpires(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("short", "  lifecycle: {ttl: 3s}\n", "sleep", "1000"))
	d.must("wait", "sandbox/short", "--for=condition=Ready", "--timeout=60s")
	pid := int(field(d.sandbox("short"), "status.pid").(float64))
	waitFor(t, 30*time.Second, "expiry", func() bool {
		sb := d.sandbox("short")
		return field(sb, "status.phase") == "Failed"
	})
	if processExists(pid) {
		t.Errorf("expired sandbox still runs")
	}
	if desc := d.must("describe", "sandbox", "short"); !strings.Contains(desc, "Expired") {
		t.Errorf("describe lacks Expired:\n%s", desc)
	}
}

// TestConcurrentUpdatesConflict sends two updates based on the same
// resourceVersion through the API: exactly one wins, the other gets 409.
func TestConcurrentUpdatesConflict(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("cc", "  operatingMode: Suspended\n", "sleep", "1000"))
	// Let the reconciler finish writing status first: its writes bump the
	// resourceVersion too.
	waitFor(t, 30*time.Second, "phase Suspended", func() bool { return field(d.sandbox("cc"), "status.phase") == "Suspended" })
	time.Sleep(200 * time.Millisecond)
	sb := d.sandbox("cc")
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			obj := map[string]any{}
			b, _ := json.Marshal(sb)
			json.Unmarshal(b, &obj)
			obj["metadata"].(map[string]any)["labels"] = map[string]any{"writer": strconv.Itoa(i)}
			body, _ := json.Marshal(obj)
			codes[i] = httpPut(d.socket, "/apis/msb.dev/v1alpha1/namespaces/default/sandboxes/cc", body)
		}(i)
	}
	wg.Wait()
	ok, conflict := 0, 0
	for _, c := range codes {
		switch c {
		case 200:
			ok++
		case 409:
			conflict++
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("status codes %v; want one 200 and one 409", codes)
	}
}

// TestApplyWait: `apply --wait` returns once the applied Sandboxes are Ready,
// and a Sandbox that fails ends the wait at once, exit 1, with its reason.
// (Ready means started, as for `wait --for=condition=Ready`: a command that
// exits right after starting was Ready.)
func TestApplyWait(t *testing.T) {
	d := startDaemon(t)
	f := filepath.Join(t.TempDir(), "m.yaml")
	os.WriteFile(f, []byte(sandboxYAML("up", "", "sleep", "1000")+"---\n"+
		"apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: s}\nspec:\n  stringData: {k: v}\n  allowedHosts: [api.example.com]\n"), 0o644)
	out := d.must("apply", "-f", f, "--wait", "--timeout=60s")
	if out != "sandbox/up created\nsecret/s created\nsandbox/up ready\n" {
		t.Fatalf("apply --wait printed %q", out)
	}
	if c := readyStatus(d.sandbox("up")); c != "True" {
		t.Fatalf("after apply --wait Ready is %q", c)
	}

	// A changed spec: --wait returns once the sandbox runs the new one.
	os.WriteFile(f, []byte(sandboxYAML("up", "  env: [{name: MODE, value: two}]\n", "sleep", "1000")), 0o644)
	if out := d.must("apply", "-f", f, "--wait", "--timeout=60s"); out != "sandbox/up configured\nsandbox/up ready\n" {
		t.Fatalf("re-apply --wait printed %q", out)
	}
	if got := d.must("exec", "up", "--", "sh", "-c", "echo $MODE"); got != "two\n" {
		t.Fatalf("after re-apply --wait the sandbox runs with MODE=%q, want two", got)
	}
	if _, stderr, code := d.ctl("apply", "-f", f, "--timeout=5s"); code == 0 || !strings.Contains(stderr, "give --wait too") {
		t.Errorf("--timeout without --wait: exit %d, stderr %q", code, stderr)
	}

	// Fails before it can start: this host's msbd runs containers only (a
	// microVM driver would make this Sandbox start instead). Waited for
	// beside a sandbox that never gets Ready, the failure still ends it.
	stuck := strings.Replace(sandboxYAML("stuck", "", "sleep", "1000"), "image: oci:"+imageDir+":latest", "image: oci:/nonexistent/image:v1", 1)
	os.WriteFile(f, []byte(stuck+"---\n"+
		sandboxYAML("dies", "  isolation: microvm\n", "sleep", "1000")), 0o644)
	t0 := time.Now()
	stdout, stderr, code := d.ctl("apply", "-f", f, "--wait", "--timeout=60s")
	if code != 1 || !strings.Contains(stderr, "sandbox/dies failed") || stdout != "sandbox/stuck created\nsandbox/dies created\n" {
		t.Fatalf("apply --wait of a failing sandbox: exit %d, stdout %q, stderr %q; want exit 1 naming the failure", code, stdout, stderr)
	}
	if took := time.Since(t0); took > 30*time.Second {
		t.Fatalf("apply --wait of a failing sandbox waited %v: it should stop when the sandbox fails", took)
	}
}

func readyStatus(sb map[string]any) string {
	conds, _ := field(sb, "status.conditions").([]any)
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Ready" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// TestSlowStopsDoNotBlockStarts: sandboxes that ignore SIGTERM take their
// grace period (--stop-grace 2s here) to stop; deleting more of them than
// msbd has reconcile workers must not delay a new sandbox's start.
func TestSlowStopsDoNotBlockStarts(t *testing.T) {
	d := startDaemon(t)
	var docs, names []string
	for i := range 5 {
		n := fmt.Sprintf("stubborn%d", i)
		names = append(names, "sandbox/"+n)
		docs = append(docs, sandboxYAML(n, "", "sh", "-c", "trap '' TERM; while :; do sleep 1; done"))
	}
	d.apply(strings.Join(docs, "---\n"))
	for _, n := range names {
		d.must("wait", n, "--for=condition=Ready", "--timeout=60s")
	}
	d.must(append([]string{"delete", "--wait=false"}, names...)...)
	d.apply(sandboxYAML("fresh", "", "sleep", "1000"))
	d.must("wait", "sandbox/fresh", "--for=condition=Ready", "--timeout=60s")
	out, _, _ := d.ctl("get", "sb", "-o", "name")
	if n := strings.Count(out, "stubborn"); n != len(names) {
		t.Errorf("the new sandbox became Ready only after %d of the %d stubborn ones were gone: stops hold the reconcile workers", len(names)-n, len(names))
	}
	for _, n := range names {
		d.must("wait", n, "--for=delete", "--timeout=60s")
	}
}
