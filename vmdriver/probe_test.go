package vmdriver

import "testing"

func TestProbe(t *testing.T) {
	h := Probe()
	t.Logf("%+v", h)
	if !h.KVM && h.KVMReason == "" {
		t.Error("no KVM and no reason")
	}
	if h.RuncPath != "" && h.RuncVersion == "" {
		t.Errorf("runc at %s but no version", h.RuncPath)
	}
}
