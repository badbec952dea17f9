package vmdriver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostInfo says which backends this host can run, so the caller chooses one
// and tests skip with a reason instead of failing.
type HostInfo struct {
	// KVM is true when /dev/kvm opens read-write; KVMReason says why not.
	KVM       bool
	KVMReason string
	// LibkrunPath is the libkrun shared library found, "" if none.
	LibkrunPath string
	// RuncPath is runc in PATH ("" if missing); RuncVersion is from `runc --version`.
	RuncPath    string
	RuncVersion string
}

// libDirs are searched for libkrun after LD_LIBRARY_PATH.
var libDirs = []string{"/usr/local/lib64", "/usr/local/lib", "/usr/lib64", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/lib"}

// Probe looks at the host once; it is cheap enough to call at startup and in tests.
func Probe() HostInfo {
	var h HostInfo
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		h.KVMReason = err.Error()
	} else {
		f.Close()
		h.KVM = true
	}
	dirs := append(filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")), libDirs...)
	for _, dir := range dirs {
		for _, name := range []string{"libkrun.so.1", "libkrun.so"} {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil && h.LibkrunPath == "" {
				h.LibkrunPath = p
			}
		}
	}
	if p, err := exec.LookPath("runc"); err == nil {
		h.RuncPath = p
		if out, err := exec.Command(p, "--version").Output(); err == nil {
			first, _, _ := strings.Cut(string(out), "\n")
			h.RuncVersion = strings.TrimSpace(strings.TrimPrefix(first, "runc version"))
		}
	}
	return h
}

// MicroVMReason says why this host cannot run microVMs, for users; "" when
// it has what a microVM needs (KVM and libkrun). A driver set built without
// a microVM driver says so on its own.
func (h HostInfo) MicroVMReason() string {
	var why []string
	if !h.KVM {
		why = append(why, "no usable KVM device (/dev/kvm: "+h.KVMReason+")")
	}
	if h.LibkrunPath == "" {
		why = append(why, "libkrun not found")
	}
	return strings.Join(why, "; ")
}
