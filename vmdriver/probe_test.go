package vmdriver

import "testing"

func TestProbe(t *testing.T) {
	h := Probe()
	t.Logf("%+v", h)
	if h.RuncPath != "" && h.RuncVersion == "" {
		t.Errorf("runc at %s but no version", h.RuncPath)
	}
}
