package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestApplyWaitTellsFailures: apply --wait and wait report a sandbox that
// cannot be Ready (its command failed, it finished, its image is missing
// under imagePullPolicy: Never) with its phase, exit code and reason, exit 1,
// at once instead of at the timeout; Succeeded is a success for a sandbox
// meant to finish.
func TestApplyWaitTellsFailures(t *testing.T) {
	d := startDaemon(t)
	f := filepath.Join(t.TempDir(), "m.yaml")
	applyWait := func(manifest string) (string, string, int) {
		t.Helper()
		os.WriteFile(f, []byte(manifest), 0o644)
		return d.ctl("apply", "-f", f, "--wait", "--timeout=90s")
	}
	for _, c := range []struct {
		name, manifest, want string
	}{
		{"exit3", sandboxYAML("exit3", "  restartPolicy: Never\n", "sh", "-c", "exit 3"), "sandbox/exit3 failed: phase Failed, exit code 3: Error: the sandbox command exited with code 3"},
		{"nocmd", sandboxYAML("nocmd", "  restartPolicy: Never\n", "/no/such/command"), "sandbox/nocmd failed: phase Failed, exit code 127"},
		{"nopull", strings.Replace(sandboxYAML("nopull", "  imagePullPolicy: Never\n", "true"), "oci:"+imageDir+":latest", "registry.invalid/none:v1", 1),
			"sandbox/nopull failed: phase Pending: PullFailed"},
	} {
		stdout, stderr, code := applyWait(c.manifest)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Contains(stdout, "ready") {
			t.Errorf("apply --wait of %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", c.name, code, stdout, stderr, c.want)
		}
		_, stderr, code = d.ctl("wait", "sb/"+c.name, "--for=condition=Ready", "--timeout=90s")
		if code != 1 || !strings.Contains(stderr, "will not become Ready") {
			t.Errorf("wait for Ready of %s: exit %d, stderr %q; want exit 1 at once", c.name, code, stderr)
		}
	}
	if stdout, stderr, code := applyWait(sandboxYAML("job", "  restartPolicy: Never\n", "true")); code != 0 || !strings.Contains(stdout, "sandbox/job succeeded") {
		t.Errorf("apply --wait of a job that succeeds: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, stderr, code := d.ctl("wait", "sb/job", "--for=condition=Ready", "--timeout=90s"); code != 1 || !strings.Contains(stderr, "phase Succeeded, exit code 0") || !strings.Contains(stderr, "msbctl restart job") {
		t.Errorf("wait for Ready of a finished sandbox: exit %d, stderr %q", code, stderr)
	}

	// exec into a sandbox that ended, or is suspended, says how to start it.
	_, stderr, code := d.ctl("exec", "exit3", "--", "true")
	if code != 1 || !strings.Contains(stderr, "exited with code 3") || !strings.Contains(stderr, "msbctl restart exit3") || strings.Contains(stderr, "msbctl wait") {
		t.Errorf("exec into a Failed sandbox: exit %d, stderr %q", code, stderr)
	}
	d.apply(sandboxYAML("sus", "  operatingMode: Suspended\n", "sleep", "1000"))
	waitFor(t, 60*time.Second, "sus Suspended", func() bool { return field(d.sandbox("sus"), "status.phase") == "Suspended" })
	if _, stderr, code := d.ctl("exec", "sus", "--", "true"); code != 1 || !strings.Contains(stderr, "msbctl resume sus") {
		t.Errorf("exec into a Suspended sandbox: exit %d, stderr %q", code, stderr)
	}
}

// TestInterruptedWaitSaysWhat: a wait ended by SIGINT or SIGTERM prints what
// it still waited for and exits 130 or 143; a pull failure msbd retries is
// reported while the wait goes on.
func TestInterruptedWaitSaysWhat(t *testing.T) {
	d := startDaemon(t)
	f := filepath.Join(t.TempDir(), "m.yaml")
	// A pull that fails and is retried: the wait goes on until interrupted.
	os.WriteFile(f, []byte(strings.Replace(sandboxYAML("stuck", "", "sleep", "1000"), "oci:"+imageDir+":latest", "oci:/nonexistent/image:v1", 1)), 0o644)
	for _, c := range []struct {
		sig  syscall.Signal
		code int
		word string
		args []string
	}{
		{syscall.SIGINT, 130, "interrupted", []string{"apply", "-f", f, "--wait", "--timeout=10m"}},
		{syscall.SIGTERM, 143, "terminated", []string{"wait", "sb/stuck", "--for=condition=Ready", "--timeout=10m"}},
	} {
		cmd := exec.Command(filepath.Join(binDir, "msbctl"), c.args...)
		cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
		var out, errOut syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		// Signal once the wait has seen the failed pull.
		waitFor(t, 60*time.Second, "the retried pull reported", func() bool { return strings.Contains(errOut.String(), "msbd retries the pull, still waiting") })
		cmd.Process.Signal(c.sig)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("msbctl %s did not end on %v", strings.Join(c.args, " "), c.sig)
		}
		if got := cmd.ProcessState.ExitCode(); got != c.code || !strings.Contains(errOut.String(), c.word+" while still waiting for sandbox/stuck") {
			t.Errorf("msbctl %s on %v: exit %d, stderr %q; want %d naming sandbox/stuck", strings.Join(c.args, " "), c.sig, got, errOut.String(), c.code)
		}
	}
}

// TestExecTTYWithoutTerminal: -it with a pipe on standard input is refused at
// once with what to do instead; it never hangs.
func TestExecTTYWithoutTerminal(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("web", "", "sleep", "1000"))
	d.must("wait", "sb/web", "--for=condition=Ready", "--timeout=60s")
	stdout, stderr, code := d.ctlIn([]byte("ls\n"), "exec", "-it", "web", "--", "sh")
	if code != 2 || !strings.Contains(stderr, "standard input is not one") || !strings.Contains(stderr, "exec -i") || stdout != "" {
		t.Errorf("exec -it with piped stdin: exit %d, stdout %q, stderr %q; want refused, exit 2", code, stdout, stderr)
	}
	if got, _, code := d.ctlIn([]byte("echo piped\n"), "exec", "-i", "web", "--", "sh"); code != 0 || got != "piped\n" {
		t.Errorf("exec -i sh with piped stdin: exit %d, stdout %q", code, got)
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSuspendResumeRestart drives the lifecycle commands: suspend and resume
// set operatingMode, restart starts a fresh run counted in restartCount (also
// of a sandbox that failed), and describe says why the last restart happened.
func TestSuspendResumeRestart(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("lc", "", "sh", "-c", "echo run; exec sleep 1000") + "---\n" + sandboxYAML("job", "  restartPolicy: Never\n", "sh", "-c", "echo job ran; exit 3"))
	d.must("wait", "sb/lc", "--for=condition=Ready", "--timeout=60s")
	waitFor(t, 60*time.Second, "job Failed", func() bool { return field(d.sandbox("job"), "status.phase") == "Failed" })

	if out := d.must("restart", "lc"); out != "sandbox/lc restarted\n" {
		t.Errorf("restart printed %q", out)
	}
	d.must("wait", "sb/lc", "--for=condition=Ready", "--timeout=60s")
	sb := d.sandbox("lc")
	if n := field(sb, "status.restartCount"); n != float64(1) {
		t.Errorf("restartCount after restart = %v, want 1", n)
	}
	if desc := d.must("describe", "sb", "lc"); !strings.Contains(desc, "Last Restart:") || !strings.Contains(desc, "requested (msbctl restart)") {
		t.Errorf("describe after restart lacks the restart:\n%s", desc)
	}
	// The restart shows as an event too.
	if ev := d.must("get", "events"); !strings.Contains(ev, "RestartRequested") {
		t.Errorf("events lack RestartRequested:\n%s", ev)
	}

	if _, stderr, code := d.ctl("logs", "job", "--previous"); code != 1 || !strings.Contains(stderr, "no previous run") {
		t.Errorf("logs --previous of a sandbox never restarted: exit %d, %q", code, stderr)
	}
	// A Failed sandbox with restartPolicy Never runs again.
	d.must("restart", "job")
	waitFor(t, 60*time.Second, "job ran twice", func() bool {
		out, _, _ := d.ctl("logs", "job")
		return strings.Count(out, "job ran") == 2
	})
	waitFor(t, 60*time.Second, "job Failed again", func() bool { return field(d.sandbox("job"), "status.phase") == "Failed" })
	if got := d.must("logs", "job", "--previous"); got != "job ran\n" {
		t.Errorf("logs --previous after a restart = %q, want the first run's output", got)
	}
	if n := field(d.sandbox("job"), "status.restartCount"); n != float64(1) {
		t.Errorf("job restartCount = %v, want 1", n)
	}

	if out := d.must("suspend", "lc"); out != "sandbox/lc suspended\n" {
		t.Errorf("suspend printed %q", out)
	}
	if p := field(d.sandbox("lc"), "status.phase"); p != "Suspended" {
		t.Errorf("phase after suspend = %v", p)
	}
	if out := d.must("suspend", "sb/lc"); out != "sandbox/lc already suspended\n" {
		t.Errorf("second suspend printed %q", out)
	}
	if _, stderr, code := d.ctl("restart", "lc"); code != 1 || !strings.Contains(stderr, "msbctl resume lc") {
		t.Errorf("restart of a suspended sandbox: exit %d, %q", code, stderr)
	}
	if out := d.must("resume", "lc"); out != "sandbox/lc resumed\n" {
		t.Errorf("resume printed %q", out)
	}
	d.must("wait", "sb/lc", "--for=condition=Ready", "--timeout=60s")

	// A spec change restarts it, and describe says why.
	d.apply(sandboxYAML("lc", "  env: [{name: V, value: two}]\n", "sh", "-c", "echo run; exec sleep 1000"))
	waitFor(t, 60*time.Second, "spec change restart", func() bool {
		return strings.Contains(d.must("describe", "sb", "lc"), "the spec changed")
	})
	if _, stderr, code := d.ctl("restart", "nosuch"); code != 1 || !strings.Contains(stderr, `"nosuch" not found`) {
		t.Errorf("restart nosuch: exit %d, %q", code, stderr)
	}
}

// TestLogCapSaysWhatItDropped: output beyond the log cap loses its oldest
// part at a line boundary, logs starts with a marker line, and describe
// shows how much was dropped.
func TestLogCapSaysWhatItDropped(t *testing.T) {
	d := startDaemon(t, "--resync", "1s")
	// 2.9M lines of up to 8 bytes: more than the 10 MiB cap.
	d.apply(sandboxYAML("chatty", "", "sh", "-c", "seq 1 2900000; echo done; exec sleep 1000"))
	waitFor(t, 120*time.Second, "all output written", func() bool {
		out, _, _ := d.ctl("logs", "chatty")
		return strings.HasSuffix(out, "\n2900000\ndone\n")
	})
	out := d.must("logs", "chatty")
	if got := d.must("logs", "chatty", "--tail", "2"); got != "2900000\ndone\n" {
		t.Errorf("logs --tail 2 = %q", got)
	}
	if got := d.must("logs", "chatty", "--tail=0"); got != "" {
		t.Errorf("logs --tail 0 = %q", got)
	}
	fout := d.ctlRunning(t, "logs", "chatty", "-f", "--tail", "1")
	waitFor(t, 30*time.Second, "logs -f --tail 1 to print the last line", func() bool { return fout.String() == "done\n" })
	marker, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(marker, "[msb: ") || !strings.Contains(marker, "bytes of earlier output were dropped") {
		t.Fatalf("logs of a capped sandbox start with %q, want the dropped-output marker", marker)
	}
	first, _, _ := strings.Cut(rest, "\n")
	n, err := strconv.Atoi(first)
	if err != nil || n < 2 {
		t.Fatalf("the kept log starts with %q: want a whole line of seq's output", first)
	}
	// What is kept is the exact tail: every line from n on, then done.
	var want strings.Builder
	for i := n; i <= 2900000; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	want.WriteString("done\n")
	if rest != want.String() {
		t.Errorf("the kept log is not seq's output from line %d on (%d bytes, want %d)", n, len(rest), want.Len())
	}
	var head int
	for i := 1; i < n; i++ {
		head += len(strconv.Itoa(i)) + 1
	}
	// status follows at the next resync (1s here); it counts exactly the
	// lines the log no longer holds.
	var dropped float64
	waitFor(t, 60*time.Second, "status.logDroppedBytes to count the dropped head", func() bool {
		dropped, _ = field(d.sandbox("chatty"), "status.logDroppedBytes").(float64)
		return int(dropped) == head
	})
	if desc := d.must("describe", "sb", "chatty"); !strings.Contains(desc, fmt.Sprintf("Log Dropped:          %d bytes", head)) {
		t.Errorf("describe lacks the dropped bytes:\n%s", desc)
	}
	if int(dropped) != head {
		t.Errorf("status.logDroppedBytes = %v, want %d (the lines before %d)", dropped, head, n)
	}
}

// TestRunAndGetAll: run creates an ordinary Sandbox (or prints its manifest),
// run --rm -i is a throwaway attached command, and get lists several kinds.
func TestRunAndGetAll(t *testing.T) {
	d := startDaemon(t)
	img := "oci:" + imageDir + ":latest"
	manifest := d.must("run", "job", "--image", img, "-e", "A=1", "-l", "app=x,tier=y", "--restart", "OnFailure", "-o", "yaml", "--dry-run", "--", "sh", "-c", "echo hi $A")
	for _, want := range []string{"kind: Sandbox", "name: job", "app: x", "tier: \"y\"", "- echo hi $A", "restartPolicy: OnFailure", "name: A"} {
		if !strings.Contains(manifest, want) {
			t.Errorf("run -o yaml --dry-run lacks %q:\n%s", want, manifest)
		}
	}
	if out, _, _ := d.ctl("get", "sb", "-o", "name"); out != "" {
		t.Fatalf("a dry run created %q", out)
	}
	// The printed manifest applies as is.
	if out := d.apply(manifest); out != "sandbox/job created\n" {
		t.Errorf("applying run's manifest: %q", out)
	}
	waitFor(t, 60*time.Second, "job's output", func() bool {
		out, _, _ := d.ctl("logs", "job")
		return out == "hi 1\n"
	})

	if out := d.must("run", "web", "--image", img, "-l", "app=web", "--", "sleep", "1000"); out != "sandbox/web created\n" {
		t.Errorf("run printed %q", out)
	}
	d.must("wait", "sb/web", "--for=condition=Ready", "--timeout=60s")
	if got := field(d.sandbox("web"), "metadata.labels.app"); got != "web" {
		t.Errorf("label app = %v", got)
	}
	if _, stderr, code := d.ctl("run", "web", "--image", img); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("run of an existing name: exit %d, %q", code, stderr)
	}
	if _, stderr, code := d.ctl("run", "x", "--rm", "--image", img); code != 2 || !strings.Contains(stderr, "give -i too") {
		t.Errorf("run --rm without -i: exit %d, %q", code, stderr)
	}

	// Attached and thrown away: the command's output and exit code, then gone.
	stdout, stderr, code := d.ctlIn([]byte("echo piped; exit 4\n"), "run", "tmp", "--rm", "-i", "--image", img)
	if stdout != "piped\n" || code != 4 || !strings.Contains(stderr, `sandbox "tmp" deleted`) {
		t.Errorf("run --rm -i: stdout %q, stderr %q, exit %d", stdout, stderr, code)
	}
	d.must("wait", "sb/tmp", "--for=delete", "--timeout=60s")

	d.apply("apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: s}\nspec:\n  stringData: {k: v}\n  allowedHosts: [api.example.com]\n---\n" +
		"apiVersion: msb.dev/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  sandboxSelector: {matchLabels: {app: web}}\n")
	all := d.must("get", "all")
	for _, want := range []string{"sandbox/job", "sandbox/web", "networkpolicy/np", "secret/s"} {
		if !strings.Contains(all, want) {
			t.Errorf("get all lacks %s:\n%s", want, all)
		}
	}
	if names := d.must("get", "sb,netpol", "-o", "name"); names != "sandbox/job\nsandbox/web\nnetworkpolicy/np\n" {
		t.Errorf("get sb,netpol -o name = %q", names)
	}
	if _, stderr, code := d.ctl("get", "sb,netpol", "web"); code != 2 || !strings.Contains(stderr, "KIND/NAME") {
		t.Errorf("get sb,netpol web: exit %d, %q", code, stderr)
	}
}

// TestApplyPrune: apply --prune deletes what an earlier apply of the same set
// created and the directory no longer holds, never an object the set did
// not create; --dry-run and diff --prune only say what would go.
func TestApplyPrune(t *testing.T) {
	d := startDaemon(t)
	dir := filepath.Join(t.TempDir(), "gitops")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", sandboxYAML("a", "", "sleep", "1000"))
	write("sub/b.yaml", sandboxYAML("b", "", "sleep", "1000"))
	write("s.yaml", "apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: s}\nspec:\n  stringData: {k: v}\n  allowedHosts: [api.example.com]\n")
	// Not the set's: made by hand, with the same kind and a similar name.
	d.must("run", "manual", "--image", "oci:"+imageDir+":latest", "--", "sleep", "1000")

	d.must("apply", "-f", dir, "-R", "--prune")
	if got := field(d.sandbox("b"), "metadata.labels"); fmt.Sprint(got) != "map[app:e2e msb.dev/applyset:gitops]" {
		t.Errorf("labels of an applied object: %v", got)
	}
	os.Remove(filepath.Join(dir, "sub/b.yaml"))
	os.Remove(filepath.Join(dir, "s.yaml"))

	out, _, code := d.ctl("diff", "-f", dir, "-R", "--prune")
	if code != 1 || !strings.Contains(out, "diff sandbox/b (pruned)") || !strings.Contains(out, "diff secret/s (pruned)") || strings.Contains(out, "manual") {
		t.Errorf("diff --prune: exit %d:\n%s", code, out)
	}
	out = d.must("apply", "-f", dir, "-R", "--prune", "--dry-run")
	if !strings.Contains(out, "sandbox/b pruned (dry run)\nsecret/s pruned (dry run)\n") || strings.Contains(out, "manual") {
		t.Errorf("apply --prune --dry-run printed:\n%s", out)
	}
	if out := d.must("get", "all", "-o", "name"); out != "sandbox/a\nsandbox/b\nsandbox/manual\nsecret/s\n" {
		t.Fatalf("a dry run pruned something: %q", out)
	}
	out = d.must("apply", "-f", dir, "-R", "--prune")
	if out != "sandbox/a unchanged\nsandbox/b pruned\nsecret/s pruned\n" {
		t.Errorf("apply --prune printed %q", out)
	}
	d.must("wait", "sb/b", "--for=delete", "--timeout=60s")
	if out := d.must("get", "all", "-o", "name"); out != "sandbox/a\nsandbox/manual\n" {
		t.Errorf("after the prune: %q", out)
	}
	// Another set with its own name never touches this one's objects.
	other := filepath.Join(t.TempDir(), "other.yaml")
	os.WriteFile(other, []byte(sandboxYAML("c", "", "sleep", "1000")), 0o644)
	if out := d.must("apply", "-f", other, "--prune"); out != "sandbox/c created\n" {
		t.Errorf("apply of set other: %q", out)
	}
	if _, stderr, code := d.ctlIn([]byte(sandboxYAML("c", "", "sleep", "1000")), "apply", "-f", "-", "--prune"); code != 2 || !strings.Contains(stderr, "--applyset") {
		t.Errorf("--prune of stdin without --applyset: exit %d, %q", code, stderr)
	}
}

// TestManifestsDir: msbd --manifests-dir keeps a directory applied: files
// added, changed and removed are applied and pruned; an invalid file is a
// Warning event and changes nothing; describe names an object's file; an
// object the directory did not make is never touched.
func TestManifestsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "static")
	os.MkdirAll(dir, 0o755)
	write := func(name, text string) {
		t.Helper()
		// As editors and git do: a new file renamed into place.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", sandboxYAML("a", "", "sleep", "1000"))
	d := startDaemon(t, "--manifests-dir", dir, "--resync", "1s")
	// Runs before the daemon's cleanup: a missing directory changes nothing,
	// so what the cleanup deletes is not applied again.
	t.Cleanup(func() { os.RemoveAll(dir) })
	exists := func(name string) bool {
		_, _, code := d.ctl("get", "sb", name)
		return code == 0
	}
	waitFor(t, 60*time.Second, "sandbox a from the directory", func() bool { return exists("a") })
	d.must("wait", "sb/a", "--for=condition=Ready", "--timeout=60s")
	if desc := d.must("describe", "sb", "a"); !strings.Contains(desc, "Source:") || !strings.Contains(desc, filepath.Join(dir, "a.yaml")+":1") {
		t.Errorf("describe of a directory's sandbox does not name its file:\n%s", desc)
	}
	d.must("run", "manual", "--image", "oci:"+imageDir+":latest", "--", "sleep", "1000")

	write("b.yaml", sandboxYAML("b", "", "sleep", "1000"))
	waitFor(t, 60*time.Second, "sandbox b added", func() bool { return exists("b") })
	write("a.yaml", sandboxYAML("a", "  env: [{name: V, value: two}]\n", "sleep", "1000"))
	waitFor(t, 60*time.Second, "sandbox a changed", func() bool { return field(d.sandbox("a"), "metadata.generation") == float64(2) })

	// An invalid file: nothing changes, not even b's removal, until it is fixed.
	write("bad.yaml", strings.Replace(sandboxYAML("c", "", "sleep", "1000"), "image:", "imagee:", 1))
	os.Remove(filepath.Join(dir, "b.yaml"))
	waitFor(t, 60*time.Second, "a Warning event seen twice", func() bool {
		out, _, _ := d.ctl("get", "events", "-o", "json")
		var list struct {
			Items []struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
				Count   int    `json:"count"`
			} `json:"items"`
		}
		json.Unmarshal([]byte(out), &list)
		for _, e := range list.Items {
			if e.Reason == "InvalidManifests" && strings.Contains(e.Message, "bad.yaml") && e.Count >= 2 {
				return true
			}
		}
		return false
	})
	if !exists("b") || exists("c") {
		t.Errorf("a directory with an invalid file changed objects: b exists %v, c exists %v", exists("b"), exists("c"))
	}
	if ev := d.must("get", "events"); !strings.Contains(ev, "InvalidManifests") {
		t.Errorf("get events lacks the warning:\n%s", ev)
	}
	os.Remove(filepath.Join(dir, "bad.yaml"))
	waitFor(t, 60*time.Second, "sandbox b pruned", func() bool { return !exists("b") })
	if !exists("manual") || !exists("a") {
		t.Errorf("the prune took more than b: manual %v, a %v", exists("manual"), exists("a"))
	}
}

// TestTop: top shows a running sandbox's CPU, memory and pids use against
// the limits its spec sets, read from its cgroups.
func TestTop(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("busy", "  resources: {cpus: 1, memory: 64Mi, pids: 32}\n", "sh", "-c", "while :; do :; done") +
		"---\n" + sandboxYAML("quiet", "  restartPolicy: Never\n", "true"))
	d.must("wait", "sb/busy", "--for=condition=Ready", "--timeout=60s")
	waitFor(t, 60*time.Second, "quiet finished", func() bool { return field(d.sandbox("quiet"), "status.phase") == "Succeeded" })
	out := d.must("top")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "busy ") {
		t.Fatalf("top lists other than the one running sandbox:\n%s", out)
	}
	f := strings.Fields(lines[1])
	if len(f) != 7 || !strings.HasSuffix(f[1], "/1000m") || strings.HasPrefix(f[1], "0m/") || !strings.HasSuffix(f[3], "/64.0MiB") || !strings.HasSuffix(f[5], "/32") {
		t.Errorf("top's row for a busy sandbox limited to 1 cpu, 64Mi, 32 pids: %q", lines[1])
	}
	if _, stderr, code := d.ctl("top", "quiet"); code != 1 || !strings.Contains(stderr, "not running (phase Succeeded)") {
		t.Errorf("top of a finished sandbox: exit %d, %q", code, stderr)
	}
}

// TestPortForward: port-forward reaches a server on a sandbox's own loopback
// through msbd and the agent, with msbd giving sandboxes no network at all.
func TestPortForward(t *testing.T) {
	d := startDaemon(t, "--network=false")
	d.must("run", "srv", "--image", "oci:"+imageDir+":latest", "--", "sh", "-c",
		"mkdir -p /w && echo hello-from-sandbox > /w/index.html && exec httpd -f -p 127.0.0.1:8000 -h /w")
	d.must("wait", "sb/srv", "--for=condition=Ready", "--timeout=60s")

	pf := exec.Command(filepath.Join(binDir, "msbctl"), "port-forward", "srv", "0:8000", "0:9")
	pf.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	var out, errOut syncBuffer
	pf.Stdout, pf.Stderr = &out, &errOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { pf.Wait(); close(done) }()
	t.Cleanup(func() { pf.Process.Kill(); <-done })
	var addrs []string
	waitFor(t, 30*time.Second, "port-forward to listen", func() bool {
		addrs = nil
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "Forwarding from "); ok {
				addrs = append(addrs, strings.Fields(a)[0])
			}
		}
		return len(addrs) == 2
	})
	get := func() (string, error) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addrs[0] + "/index.html")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// httpd may take a moment to listen after Ready.
	var body string
	waitFor(t, 30*time.Second, "the sandbox's server through the forward", func() bool {
		b, err := get()
		body = b
		return err == nil && b != ""
	})
	if body != "hello-from-sandbox\n" {
		t.Errorf("through port-forward: %q", body)
	}
	for i := 0; i < 3; i++ {
		if b, err := get(); err != nil || b != body {
			t.Errorf("request %d through the forward: %q, %v", i, b, err)
		}
	}
	// Nothing listens on 9: the connection ends and msbctl says why.
	if c, err := net.DialTimeout("tcp", addrs[1], 5*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		n, _ := c.Read(make([]byte, 1))
		c.Close()
		if n != 0 {
			t.Errorf("a forward to a closed port returned data")
		}
	}
	waitFor(t, 30*time.Second, "the error for the closed port", func() bool {
		return strings.Contains(errOut.String(), "nothing accepts connections on 127.0.0.1:9")
	})
	pf.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward did not end on SIGINT")
	}
	if code := pf.ProcessState.ExitCode(); code != 0 {
		t.Errorf("port-forward exited %d on SIGINT, stderr %q", code, errOut.String())
	}
}

// TestLogsTimestamps: logs --timestamps prefixes each line with when it was
// written, and --since keeps the recent ones.
func TestLogsTimestamps(t *testing.T) {
	d := startDaemon(t)
	before := time.Now().UTC()
	d.apply(sandboxYAML("ts", "", "sh", "-c", "echo one; sleep 1; echo two; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo three; exec sleep 1000"))
	waitFor(t, 60*time.Second, "both lines", func() bool {
		out, _, _ := d.ctl("logs", "ts")
		return out == "one\ntwo\n"
	})
	out := d.must("logs", "ts", "--timestamps")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var times []time.Time
	for i, want := range []string{"one", "two"} {
		if i >= len(lines) {
			t.Fatalf("logs --timestamps: %q", out)
		}
		stamp, text, _ := strings.Cut(lines[i], " ")
		ts, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || text != want || ts.Before(before.Add(-time.Second)) {
			t.Fatalf("logs --timestamps line %d = %q: want an RFC 3339 time of this run, then %q", i, lines[i], want)
		}
		times = append(times, ts)
	}
	if !times[1].After(times[0]) {
		t.Errorf("the second line's time %v is not after the first's %v (a sleep 1 between)", times[1], times[0])
	}
	if got := d.must("logs", "ts", "--since", "1h"); got != "one\ntwo\n" {
		t.Errorf("logs --since 1h = %q", got)
	}
	if got := d.must("logs", "ts", "--since", "1h", "--tail", "1", "--timestamps"); !strings.HasSuffix(got, " two\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("logs --since 1h --tail 1 --timestamps = %q", got)
	}
	// Followed: the same times for what is there, then new lines stamped too.
	fout := d.ctlRunning(t, "logs", "ts", "-f", "--timestamps", "--tail", "1")
	d.must("exec", "ts", "--", "touch", "/tmp/go") // the main command then writes three
	waitFor(t, 30*time.Second, "the followed new line", func() bool { return strings.Count(fout.String(), "\n") >= 2 })
	got := strings.Split(strings.TrimSuffix(fout.String(), "\n"), "\n")
	if len(got) != 2 || got[0] != lines[1] || !strings.HasSuffix(got[1], " three") {
		t.Errorf("logs -f --timestamps --tail 1 = %q; want %q then a stamped three", fout.String(), lines[1])
	} else if ts, err := time.Parse(time.RFC3339Nano, strings.TrimSuffix(got[1], " three")); err != nil || !ts.After(times[1]) {
		t.Errorf("the followed line's time %q is not after the last one's", got[1])
	}
	if _, stderr, code := d.ctl("logs", "ts", "-f", "--previous"); code != 2 || !strings.Contains(stderr, "cannot be followed") {
		t.Errorf("logs -f --previous: exit %d, %q", code, stderr)
	}
}

// ctlRunning starts msbctl args against d and returns its output as it
// comes; the process is killed at the end of the test.
func (d *daemon) ctlRunning(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "msbctl"), args...)
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	out := &syncBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return out
}
