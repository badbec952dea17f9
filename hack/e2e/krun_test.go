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
				msg, phase = m, field(sb, "status.phase").(string)
				return r == "MicroVMUnavailable"
			})
			if !strings.Contains(msg, c.want) || phase != "Pending" {
				t.Errorf("phase %s, message %q: want Pending and %q", phase, msg, c.want)
			}
			events := d.must("get", "events")
			if !strings.Contains(events, "Warning") || !strings.Contains(events, "MicroVMUnavailable") || !strings.Contains(events, c.want) {
				t.Errorf("no Warning event with the finding:\n%s", events)
			}
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
