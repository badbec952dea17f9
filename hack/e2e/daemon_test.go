package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/images/imagetest"
)

// condition returns status and message of a Sandbox condition.
func condition(sb map[string]any, typ string) (status, reason, msg string) {
	conds, _ := field(sb, "status.conditions").([]any)
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			r, _ := m["reason"].(string)
			g, _ := m["message"].(string)
			return s, r, g
		}
	}
	return "", "", ""
}

// TestAgentMissingRefusesSandboxes: msbd with an unusable agent starts, but
// refuses to start sandboxes with a message that says what to do.
func TestAgentMissingRefusesSandboxes(t *testing.T) {
	for name, agent := range map[string]string{"dynamic": "/bin/ls", "missing": "/nonexistent/msb-agent"} {
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t, "--agent", agent)
			d.apply(sandboxYAML("noagent", "", "sleep", "100"))
			var msg string
			waitFor(t, 30*time.Second, "Ready=False AgentMissing", func() bool {
				_, r, m := condition(d.sandbox("noagent"), "Ready")
				msg = m
				return r == "AgentMissing"
			})
			if !strings.Contains(msg, "CGO_ENABLED=0 go build") {
				t.Errorf("message does not say how to fix it: %q", msg)
			}
		})
	}
}

// TestHostileImagesRefused: images that try to write outside their root are
// refused with InvalidImage naming the entry, and the host stays untouched.
func TestHostileImagesRefused(t *testing.T) {
	d := startDaemon(t)
	host := t.TempDir()
	victim := filepath.Join(host, "victim")
	os.WriteFile(victim, []byte("original"), 0o644)
	var docs []string
	cases := imagetest.HostileCases(host)
	for i, c := range cases {
		img, err := imagetest.ImageOf(c.Entries...)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), c.Name)
		if err := imagetest.WriteOCILayout(dir, img, "latest"); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, strings.Replace(sandboxYAML(caseName(i), "", "true"), "oci:"+imageDir+":latest", "oci:"+dir+":latest", 1))
	}
	// apply --wait stops at the refusal instead of waiting out its timeout.
	f := filepath.Join(t.TempDir(), "hostile.yaml")
	os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o644)
	t0 := time.Now()
	if _, stderr, code := d.ctl("apply", "-f", f, "--wait", "--timeout=60s"); code != 1 || !strings.Contains(stderr, "InvalidImage") {
		t.Errorf("apply --wait of hostile images: exit %d, stderr %q; want exit 1 naming InvalidImage", code, stderr)
	} else if took := time.Since(t0); took > 30*time.Second {
		t.Errorf("apply --wait of hostile images took %v: it should stop at the first refusal", took)
	}
	for i, c := range cases {
		name := caseName(i)
		var reason, msg string
		waitFor(t, 30*time.Second, c.Name+" refused", func() bool {
			_, reason, msg = condition(d.sandbox(name), "ImageReady")
			return reason == "InvalidImage"
		})
		if !strings.Contains(msg, c.Entry) || !strings.Contains(msg, "layer sha256:") {
			t.Errorf("%s: condition message does not name layer and entry %q: %s", c.Name, c.Entry, msg)
		}
	}
	ents, _ := os.ReadDir(host)
	if len(ents) != 1 {
		t.Errorf("host directory changed: %v", ents)
	}
	if b, _ := os.ReadFile(victim); string(b) != "original" {
		t.Errorf("victim file changed: %q", b)
	}
}

func caseName(i int) string { return "hostile-" + string(rune('a'+i)) }

// TestTwoDaemonsDoNotCollide runs two msbd with different state dirs at once.
func TestTwoDaemonsDoNotCollide(t *testing.T) {
	a := startDaemon(t)
	b := startDaemon(t)
	m := sandboxYAML("same-name", "", "sleep", "1000")
	a.apply(m)
	b.apply(m)
	a.must("wait", "sandbox/same-name", "--for=condition=Ready", "--timeout=60s")
	b.must("wait", "sandbox/same-name", "--for=condition=Ready", "--timeout=60s")
	pb := field(b.sandbox("same-name"), "status.pid")
	a.must("delete", "sandbox", "same-name", "--wait", "--timeout=60s")
	if got := b.must("exec", "same-name", "--", "echo", "alive"); got != "alive\n" {
		t.Fatalf("second msbd's sandbox affected by the first: %q", got)
	}
	if p := field(b.sandbox("same-name"), "status.pid"); p != pb {
		t.Fatalf("second msbd's sandbox restarted")
	}
	if out := b.must("delete", "sandboxes", "--all", "--wait", "--timeout=60s"); !strings.Contains(out, `sandbox "same-name" deleted`) {
		t.Errorf("delete --all printed %q", out)
	}
	if _, stderr, _ := b.ctl("get", "sandboxes"); !strings.Contains(stderr, "No resources found") {
		t.Errorf("after delete --all, get printed %q", stderr)
	}
}

// TestApplyStdinDiffAndGet covers apply -f -, diff exit codes and get output forms.
func TestApplyStdinDiffAndGet(t *testing.T) {
	d := startDaemon(t)
	m := sandboxYAML("st", "  operatingMode: Suspended\n", "sleep", "1000")
	out, errOut, code := d.ctlIn([]byte(m), "apply", "-f", "-")
	if code != 0 || strings.TrimSpace(out) != "sandbox/st created" {
		t.Fatalf("apply -f -: %d %q %q", code, out, errOut)
	}
	f := filepath.Join(t.TempDir(), "m.yaml")
	os.WriteFile(f, []byte(m), 0o644)
	if _, _, code := d.ctl("diff", "-f", f); code != 0 {
		t.Errorf("diff of an applied manifest exited %d, want 0", code)
	}
	os.WriteFile(f, []byte(strings.Replace(m, "sleep", "sh", 1)), 0o644)
	if out, _, code := d.ctl("diff", "-f", f); code != 1 || !strings.Contains(out, "sh") {
		t.Errorf("diff of a changed manifest exited %d (want 1):\n%s", code, out)
	}
	if out := d.must("get", "sb", "st", "-o", "name"); strings.TrimSpace(out) != "sandbox/st" {
		t.Errorf("get -o name = %q", out)
	}
	if out := d.must("get", "sb/st", "-o", "yaml"); !strings.HasPrefix(out, "apiVersion: msb.dev/v1alpha1\nkind: Sandbox\n") {
		t.Errorf("get -o yaml of one object is not that object:\n%s", out)
	}
	if _, _, code := d.ctl("get", "sb", "missing"); code == 0 {
		t.Errorf("get of a missing sandbox exited 0")
	}
}

// TestRestoredStoreKeepsUnknownSandboxes: an msbd started on a database
// restored from an older backup does not destroy the sandboxes created since
// (the store does not know them); it says why and how to accept the store,
// and once the operator does, they are removed as orphans.
func TestRestoredStoreKeepsUnknownSandboxes(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("old", "", "sleep", "1000"))
	d.must("wait", "sandbox/old", "--for=condition=Ready", "--timeout=60s")
	d.stop()
	db := filepath.Join(d.stateDir, "msb.db")
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	d.start()
	d.apply(sandboxYAML("new", "", "sleep", "1000"))
	d.must("wait", "sandbox/new", "--for=condition=Ready", "--timeout=60s")
	newUID := field(d.sandbox("new"), "metadata.uid").(string)
	newPID := int(field(d.sandbox("new"), "status.pid").(float64))
	d.stop()

	if err := os.WriteFile(db, backup, 0o600); err != nil { // the restore
		t.Fatal(err)
	}
	d.start()
	d.must("wait", "sandbox/old", "--for=condition=Ready", "--timeout=60s")
	if _, _, code := d.ctl("get", "sandbox", "new"); code == 0 {
		t.Fatal("the restored store knows sandbox new")
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", newUID)); err != nil {
		t.Fatalf("the sandbox unknown to the restored store was removed: %v", err)
	}
	if !processExists(newPID) {
		t.Fatal("the sandbox unknown to the restored store was stopped")
	}
	if log := d.logBuf.String(); !strings.Contains(log, "restored from a backup") || !strings.Contains(log, "store-fence.json") {
		t.Errorf("msbd did not say why it keeps the sandbox and how to accept the store:\n%s", log)
	}

	// Held for good: the restored store catching up in revision is still
	// another history.
	var secrets []string
	for i := range 40 {
		secrets = append(secrets, fmt.Sprintf("apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: s%d}\nspec:\n  stringData: {k: v}\n  allowedHosts: [api.example.com]\n", i))
	}
	d.apply(strings.Join(secrets, "---\n"))
	for i := range 40 {
		d.must("delete", fmt.Sprintf("secret/s%d", i))
	}
	d.stop()
	d.start()
	if _, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", newUID)); err != nil {
		t.Fatalf("after the restored store's revision passed the fence, a restart removed the sandbox: %v", err)
	}

	// The operator accepts the restored store: the orphan goes.
	d.stop()
	if err := os.Remove(filepath.Join(d.stateDir, "store-fence.json")); err != nil {
		t.Fatal(err)
	}
	d.start()
	waitFor(t, 30*time.Second, "the orphan removed", func() bool {
		_, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", newUID))
		return os.IsNotExist(err)
	})

	// Another database altogether (here: a new, empty one) keeps them too.
	oldUID := field(d.sandbox("old"), "metadata.uid").(string)
	d.stop()
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	d.start()
	if _, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", oldUID)); err != nil {
		t.Fatalf("a sandbox unknown to another database was removed: %v", err)
	}
	if log := d.logBuf.String(); !strings.Contains(log, "not the one this state directory's sandboxes belong to") {
		t.Errorf("msbd did not say the database is another one:\n%s", log)
	}
	d.stop()
	os.Remove(filepath.Join(d.stateDir, "store-fence.json"))
	d.start()
	waitFor(t, 30*time.Second, "the orphan removed", func() bool {
		_, err := os.Stat(filepath.Join(d.stateDir, "sandboxes", oldUID))
		return os.IsNotExist(err)
	})
}
