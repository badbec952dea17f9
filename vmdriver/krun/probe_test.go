package krun

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun/krunstandin"
)

// kvmStandIn is a regular file that opens read-write: what the probe asks
// of a KVM device, without KVM.
func kvmStandIn(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeStandIn(t *testing.T) {
	lib := krunstandin.Build(t)
	f := Probe(lib, kvmStandIn(t))
	if !f.Available() || f.Reason() != "" {
		t.Fatalf("stand-in library and device: available %v, reason %q", f.Available(), f.Reason())
	}
	if f.Library != lib {
		t.Errorf("Library = %q, want the file loaded, %q", f.Library, lib)
	}
	if f.KVMCharDevice {
		t.Error("a regular file reported as a character device")
	}
	if f.MaxVCPUs != 8 || !slices.Equal(f.Features, []string{"net", "blk"}) {
		t.Errorf("MaxVCPUs %d, Features %v: want the stand-in's 8 and [net blk]", f.MaxVCPUs, f.Features)
	}
	if len(f.MissingOptional) != 0 {
		t.Errorf("MissingOptional %v, want none", f.MissingOptional)
	}
}

func TestProbeFailures(t *testing.T) {
	good := krunstandin.Build(t)
	for _, c := range []struct {
		name      string
		lib, kvm  string
		wantInWhy []string
	}{
		{"missing library", filepath.Join(t.TempDir(), "libkrun.so.1"), kvmStandIn(t), []string{"loading libkrun", "No such file"}},
		{"missing symbol", krunstandin.Build(t, "krun_add_vsock_port2", "krun_set_port_map"), kvmStandIn(t),
			[]string{"lacks krun_set_port_map, krun_add_vsock_port2", "1.12"}},
		{"no KVM device", good, filepath.Join(t.TempDir(), "kvm"), []string{"no usable KVM device", "open read-write", "no such file"}},
		{"KVM device not openable read-write", good, t.TempDir(), []string{"no usable KVM device", "is a directory"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := Probe(c.lib, c.kvm)
			if f.Available() {
				t.Fatal("available")
			}
			why := f.Reason()
			for _, w := range c.wantInWhy {
				if !strings.Contains(why, w) {
					t.Errorf("reason %q does not say %q", why, w)
				}
			}
			if f.LibraryTried != c.lib || f.KVMDevice != c.kvm {
				t.Errorf("tried %q and %q, want %q and %q", f.LibraryTried, f.KVMDevice, c.lib, c.kvm)
			}
		})
	}
}

func TestProbeOptionalMissing(t *testing.T) {
	f := Probe(krunstandin.Build(t, "krun_get_max_vcpus", "krun_has_feature"), kvmStandIn(t))
	if !f.Available() {
		t.Fatalf("optional symbols missing made it unavailable: %s", f.Reason())
	}
	if !slices.Equal(f.MissingOptional, []string{"krun_get_max_vcpus", "krun_has_feature"}) || f.MaxVCPUs != 0 || f.Features != nil {
		t.Errorf("MissingOptional %v, MaxVCPUs %d, Features %v", f.MissingOptional, f.MaxVCPUs, f.Features)
	}
}

// TestProbeHost says what this host has; it fails nothing where KVM or
// libkrun is missing, but checks that a missing part has a reason.
func TestProbeHost(t *testing.T) {
	f := Probe("", "")
	t.Logf("%s", f)
	if !f.Available() && f.Reason() == "" {
		t.Error("unavailable without a reason")
	}
}

func TestProbeSandboxAccess(t *testing.T) {
	lib := krunstandin.Build(t)
	kvm := kvmStandIn(t)
	for _, c := range []struct {
		mode      os.FileMode
		uid, gid  int
		available bool
	}{
		{0o666, 0, 0, true},
		{0o600, 0, 0, false},   // root's only, as on this kind of host
		{0o660, 0, 4242, true}, // the sandboxes' group
		{0o660, 0, 4243, false},
	} {
		if err := os.Chmod(kvm, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(kvm, c.uid, c.gid); err != nil {
			t.Skip("cannot chown the stand-in device:", err)
		}
		f := Probe(lib, kvm)
		f.RequireAccess(4242, 4242)
		if f.Available() != c.available {
			t.Errorf("mode %o owner %d:%d: available %v, want %v (%s)", c.mode, c.uid, c.gid, f.Available(), c.available, f.Reason())
		}
		if !c.available && !strings.Contains(f.Reason(), "chmod 0666") {
			t.Errorf("reason %q does not say what to do", f.Reason())
		}
		// With a range per sandbox, no runner is the span's first uid: the
		// group of the first range does not help them, others' bits do.
		f = Probe(lib, kvm)
		f.RequireAccessSpan(4242, 4242, 3*container.SlotSize)
		if want := c.mode&0o006 == 0o006; f.Available() != want {
			t.Errorf("span, mode %o owner %d:%d: available %v, want %v (%s)", c.mode, c.uid, c.gid, f.Available(), want, f.Reason())
		}
	}
	// A device whose group is one sandbox's gid: that sandbox uses the
	// group's bits, the others the others' bits.
	must(t, os.Chown(kvm, 0, 4242+container.SlotSize))
	must(t, os.Chmod(kvm, 0o606))
	f := Probe(lib, kvm)
	f.RequireAccessSpan(4242, 4242, 3*container.SlotSize)
	if f.Available() || !strings.Contains(f.Reason(), "one per sandbox") {
		t.Errorf("group of a sandbox without rw: available %v (%s), want unavailable", f.Available(), f.Reason())
	}
}
