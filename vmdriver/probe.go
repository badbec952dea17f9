package vmdriver

import (
	"os/exec"
	"strings"
)

// HostInfo says what this host offers the container backend, so the caller
// chooses and tests skip with a reason instead of failing. What microVMs
// need (KVM, libkrun) is the krun package's probe: it loads the library.
type HostInfo struct {
	// RuncPath is runc in PATH ("" if missing); RuncVersion is from `runc --version`.
	RuncPath    string
	RuncVersion string
}

// Probe looks at the host once; it is cheap enough to call at startup and in tests.
func Probe() HostInfo {
	var h HostInfo
	if p, err := exec.LookPath("runc"); err == nil {
		h.RuncPath = p
		if out, err := exec.Command(p, "--version").Output(); err == nil {
			first, _, _ := strings.Cut(string(out), "\n")
			h.RuncVersion = strings.TrimSpace(strings.TrimPrefix(first, "runc version"))
		}
	}
	return h
}
