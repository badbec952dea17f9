package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver/krun/krunstandin"
)

// kvmStandIn is a regular file that opens read-write: what msbd's probe
// asks of a KVM device (msbctl info says it is not a character device).
func kvmStandIn(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKrunProbeFindings: an msbd whose libkrun is missing or too old, or
// whose KVM device does not open read-write, keeps isolation: microvm
// sandboxes Pending with MicroVMUnavailable and the probe's finding, records
// a Warning event, and msbctl info says the same.
func TestKrunProbeFindings(t *testing.T) {
	requireRoot(t)
	good := krunstandin.Build(t)
	for _, c := range []struct {
		name     string
		lib, kvm string
		want     string
	}{
		{"missing library", filepath.Join(t.TempDir(), "libkrun.so.1"), kvmStandIn(t), "cannot open shared object file"},
		{"missing symbol", krunstandin.Build(t, "krun_add_vsock_port2"), kvmStandIn(t), "lacks krun_add_vsock_port2 (msb needs libkrun 1.12 or newer)"},
		{"KVM device not openable", good, filepath.Join(t.TempDir(), "nokvm"), "no usable KVM device (open read-write "},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startDaemon(t, "--krun-lib", c.lib, "--kvm-device", c.kvm)
			d.apply(sandboxYAML("vm", "  isolation: microvm\n", "sleep", "100"))
			var msg, phase string
			waitFor(t, 30*time.Second, "Ready=False MicroVMUnavailable", func() bool {
				sb := d.sandbox("vm")
				_, r, m := condition(sb, "Ready")
				msg = m
				phase, _ = field(sb, "status.phase").(string)
				return r == "MicroVMUnavailable"
			})
			if !strings.Contains(msg, c.want) || phase != "Pending" {
				t.Errorf("phase %s, message %q: want Pending and %q", phase, msg, c.want)
			}
			// Events are written in batches: wait for it.
			waitFor(t, 30*time.Second, "a Warning event MicroVMUnavailable with the finding", func() bool {
				events := d.must("get", "events")
				return strings.Contains(events, "Warning") && strings.Contains(events, "MicroVMUnavailable") && strings.Contains(events, c.want)
			})
			info := d.must("info")
			var krunLine string
			for _, l := range strings.Split(info, "\n") {
				if strings.Contains(l, " krun ") {
					krunLine = l
				}
			}
			if !strings.HasPrefix(krunLine, "  ! krun") || !strings.Contains(krunLine, "unavailable") || !strings.Contains(krunLine, c.want) {
				t.Errorf("msbctl info's krun line %q does not say %q:\n%s", krunLine, c.want, info)
			}
			if !strings.Contains(info, c.lib) || !strings.Contains(info, c.kvm) {
				t.Errorf("msbctl info does not name the library and device tried:\n%s", info)
			}
		})
	}
}

// startKrunDaemon runs msbd whose microVM driver loads the stand-in libkrun.
func startKrunDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	requireRoot(t)
	lib := krunstandin.Build(t)
	return startDaemon(t, "--krun-lib", lib, "--kvm-device", krunstandin.Device(t, lib)), lib
}

// TestKrunCoreFlow: with libkrun (the stand-in) and a KVM device, auto
// runs sandboxes in microVMs: apply, Ready, exec with exit codes, logs,
// adoption across an msbd crash, delete — the same as with containers.
func TestKrunCoreFlow(t *testing.T) {
	d, lib := startKrunDaemon(t)
	info := d.must("info")
	if !strings.Contains(strings.Join(strings.Fields(info), " "), "Drivers: krun microvm available isolation auto uses it container") || !strings.Contains(info, lib) {
		t.Errorf("msbctl info does not say krun is available and used by auto:\n%s", info)
	}
	d.apply(sandboxYAML("vm", "", "sh", "-c", "echo hello from the guest; exec sleep 100000"))
	d.must("wait", "sandbox/vm", "--for=condition=Ready", "--timeout=60s")
	sb := d.sandbox("vm")
	if field(sb, "status.driver") != "krun" || field(sb, "status.isolation") != "microvm" {
		t.Fatalf("status driver %v isolation %v, want krun microvm", field(sb, "status.driver"), field(sb, "status.isolation"))
	}
	uid, _ := field(sb, "metadata.uid").(string)
	if out := d.must("exec", "vm", "--", "echo", "hi"); out != "hi\n" {
		t.Errorf("exec echo hi: %q", out)
	}
	if _, _, code := d.ctl("exec", "vm", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit 7: exit %d", code)
	}
	if out, _, code := d.ctlIn([]byte("through stdin\n"), "exec", "-i", "vm", "--", "cat"); code != 0 || out != "through stdin\n" {
		t.Errorf("exec -i cat: exit %d, %q", code, out)
	}
	// Files in and out over the same agent connection.
	local := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(local, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.must("cp", local, "vm:/tmp/in.txt")
	if out := d.must("exec", "vm", "--", "cat", "/tmp/in.txt"); out != "copied in\n" {
		t.Errorf("after cp in: %q", out)
	}
	back := filepath.Join(t.TempDir(), "out.txt")
	d.must("cp", "vm:/tmp/in.txt", back)
	if b, err := os.ReadFile(back); err != nil || string(b) != "copied in\n" {
		t.Errorf("cp out: %q, %v", b, err)
	}
	waitFor(t, 30*time.Second, "the command's output in the log", func() bool {
		out, _, _ := d.ctl("logs", "vm")
		return strings.Contains(out, "hello from the guest")
	})
	console := filepath.Join(d.stateDir, "krun", "sandboxes", uid, "vm", "console.log")
	calls, err := krunstandin.Calls(console)
	if err != nil {
		t.Fatal(err)
	}
	if start := krunstandin.Find(calls, "krun_start_enter"); start == nil || strings.Contains(strings.Join(start.Strs("environ"), " "), "MSB_SOCKET") {
		t.Errorf("krun_start_enter %v: want it called, without msbd's environment", start)
	}
	pid := field(sb, "status.pid")

	// msbd crashes; the VM runs on and is adopted.
	d.kill9()
	d.start()
	waitFor(t, 30*time.Second, "the sandbox adopted", func() bool {
		sb := d.sandbox("vm")
		s, _, _ := condition(sb, "Ready")
		return s == "True" && field(sb, "status.pid") == pid
	})
	if out := d.must("exec", "vm", "--", "echo", "still here"); out != "still here\n" {
		t.Errorf("exec after adoption: %q", out)
	}

	// A command that ends gives its exit code.
	d.apply(sandboxYAML("ends", "  restartPolicy: Never\n", "sh", "-c", "exit 3"))
	waitFor(t, 60*time.Second, "ends to fail with 3", func() bool {
		sb := d.sandbox("ends")
		return field(sb, "status.phase") == "Failed" && field(sb, "status.exitCode") == float64(3)
	})

	d.must("delete", "sandbox", "vm", "ends", "--wait", "--timeout=60s")
	if ents, _ := os.ReadDir(filepath.Join(d.stateDir, "krun", "sandboxes")); len(ents) > 0 {
		t.Errorf("krun sandbox directories left after delete: %d", len(ents))
	}
}

// TestKrunIsolationChoice: microvm never falls back; container always uses
// runc, also where microVMs run.
func TestKrunIsolationChoice(t *testing.T) {
	d, _ := startKrunDaemon(t)
	d.apply(sandboxYAML("ctr", "  isolation: container\n", "sleep", "100000"))
	d.apply(sandboxYAML("vm", "  isolation: microvm\n", "sleep", "100000"))
	d.must("wait", "sandbox/ctr", "sandbox/vm", "--for=condition=Ready", "--timeout=60s")
	for name, want := range map[string]string{"ctr": "container", "vm": "krun"} {
		if got := field(d.sandbox(name), "status.driver"); got != want {
			t.Errorf("%s: status.driver %v, want %s", name, got, want)
		}
	}
	if events := d.must("get", "events"); strings.Contains(events, "ContainerFallback") {
		t.Errorf("a fallback event where microVMs run:\n%s", events)
	}
}

// TestAutoFallsBackWithWarning: without microVMs, auto runs a container and
// a Warning event says why.
func TestAutoFallsBackWithWarning(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t, "--krun-lib", filepath.Join(t.TempDir(), "libkrun.so.1"))
	d.apply(sandboxYAML("auto", "", "sleep", "100000"))
	d.must("wait", "sandbox/auto", "--for=condition=Ready", "--timeout=60s")
	if got := field(d.sandbox("auto"), "status.isolation"); got != "container" {
		t.Errorf("status.isolation %v, want container", got)
	}
	waitFor(t, 30*time.Second, "a Warning event saying why auto fell back", func() bool {
		events := d.must("get", "events")
		return strings.Contains(events, "Warning") && strings.Contains(events, "ContainerFallback") && strings.Contains(events, "cannot open shared object file")
	})
}
