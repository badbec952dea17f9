package krun

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver/container"
)

// DefaultKVMDevice is the KVM device libkrun opens.
const DefaultKVMDevice = "/dev/kvm"

// libkrunfwNames are the sonames of libkrunfw (the guest kernel libkrun
// loads), newest first.
var libkrunfwNames = []string{"libkrunfw.so.5", "libkrunfw.so.4"}

// features are libkrun's build features worth reporting (KRUN_FEATURE_*).
var features = []struct {
	id   uint64
	name string
}{{0, "net"}, {1, "blk"}, {2, "gpu"}, {4, "input"}, {6, "tee"}, {7, "amd-sev"}, {8, "intel-tdx"}, {11, "init-blob"}}

// Finding is what Probe learned about running microVMs on this host.
type Finding struct {
	// KVMDevice is the device tried; KVM is true when it opened read-write,
	// KVMError says why not. KVMCharDevice is false for a regular file
	// (a test's stand-in): it opened, but no VM can run on it.
	KVMDevice     string
	KVM           bool
	KVMError      string
	KVMCharDevice bool
	// LibraryTried is the path (or soname) given to the loader; Library is
	// the file it loaded, empty when loading failed with LibraryError.
	LibraryTried string
	Library      string
	LibraryError string
	// MissingOptional are optional symbols the library lacks.
	MissingOptional []string
	// Libkrunfw is the guest kernel library found by the loader, "" if none.
	Libkrunfw string
	// MaxVCPUs is the hypervisor's limit (0: unknown). Features are
	// libkrun's build features that are on. NestedVirt: whether the host
	// offers nested virtualisation.
	MaxVCPUs   int
	Features   []string
	NestedVirt bool

	lib *Lib
}

// Probe checks the KVM device (DefaultKVMDevice when empty) and loads
// libkrun from libPath (DefaultLibrary when empty).
func Probe(libPath, kvmDevice string) Finding {
	if kvmDevice == "" {
		kvmDevice = DefaultKVMDevice
	}
	if libPath == "" {
		libPath = DefaultLibrary
	}
	f := Finding{KVMDevice: kvmDevice, LibraryTried: libPath}
	if err := openKVM(kvmDevice); err != nil {
		f.KVMError = err.Error()
	} else {
		f.KVM = true
		if fi, err := os.Stat(kvmDevice); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			f.KVMCharDevice = true
		}
	}
	lib, err := Load(libPath)
	if err != nil {
		f.LibraryError = err.Error()
		return f
	}
	f.lib = lib
	f.Library = lib.Path
	f.MissingOptional = lib.MissingOptional()
	f.Libkrunfw = findLibkrunfw()
	if n, err := lib.MaxVCPUs(); err == nil {
		f.MaxVCPUs = n
	}
	for _, ft := range features {
		if on, err := lib.HasFeature(ft.id); err == nil && on {
			f.Features = append(f.Features, ft.name)
		}
	}
	if on, err := lib.NestedVirt(); err == nil {
		f.NestedVirt = on
	}
	return f
}

// openKVM opens dev read-write (what libkrun does) and closes it. A regular
// file passes too: tests stand one in for the device; Finding says which.
func openKVM(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open read-write", Path: dev, Err: err}
	}
	unix.Close(fd)
	return nil
}

// RequireAccess checks that the KVM device is read-write for the sandboxes'
// host ids uid and gid too, by its mode bits: the runner (the VMM) runs as
// them, not as root, and libkrun opens the device there. A device they
// cannot use makes microVMs unavailable, saying what to do.
func (f *Finding) RequireAccess(uid, gid uint32) { f.RequireAccessSpan(uid, gid, container.SlotSize) }

// RequireAccessSpan is RequireAccess for every sandbox of the host id span
// uid/gid+size: where the span holds ranges of their own (slots of
// container.SlotSize ids), each runner runs as its slot's first uid and
// gid, which neither own the device nor are its group, so the device must
// be read-write for others (mode 0666, as systemd's udev rules make it).
func (f *Finding) RequireAccessSpan(uid, gid, size uint32) {
	if !f.KVM {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(f.KVMDevice, &st); err != nil {
		f.KVM, f.KVMError = false, err.Error()
		return
	}
	bits := func(u, g uint32) uint32 {
		switch {
		case st.Uid == u:
			return st.Mode >> 6 & 0o7
		case st.Gid == g:
			return st.Mode >> 3 & 0o7
		}
		return st.Mode & 0o007
	}
	who := fmt.Sprintf("the sandboxes' host uid %d, which runs the VMM", uid)
	ok := bits(uid, gid)&0o6 == 0o6
	if slots := size / container.SlotSize; slots >= 2 {
		who = fmt.Sprintf("the sandboxes' host uids (one per sandbox, %d.., which run the VMMs)", uid+container.SlotSize)
		// Every slot's ids: the others' bits, and the owner's or group's
		// where a slot's first id happens to be the device's.
		ok = st.Mode&0o006 == 0o006
		for _, o := range []struct{ id, base, bits uint32 }{{st.Uid, uid, st.Mode >> 6 & 0o7}, {st.Gid, gid, st.Mode >> 3 & 0o7}} {
			if o.id > o.base && o.id-o.base < slots*container.SlotSize && (o.id-o.base)%container.SlotSize == 0 {
				ok = ok && o.bits&0o6 == 0o6
			}
		}
	}
	if !ok {
		f.KVM = false
		f.KVMError = fmt.Sprintf("%s (mode %04o, owner %d:%d) is not read-write for %s: make it mode 0666, as systemd's udev rules do (chmod 0666 %s)",
			f.KVMDevice, st.Mode&0o7777, st.Uid, st.Gid, who, f.KVMDevice)
	}
}

// Available reports whether a microVM can run: the KVM device opens
// read-write and libkrun loaded with every required symbol.
func (f Finding) Available() bool { return f.KVM && f.lib != nil }

// Lib is the loaded library, nil when it did not load.
func (f Finding) Lib() *Lib { return f.lib }

// Reason says why microVMs are unavailable, for users; "" when they are.
func (f Finding) Reason() string {
	var why []string
	if !f.KVM {
		why = append(why, "no usable KVM device ("+f.KVMError+")")
	}
	if f.lib == nil {
		why = append(why, f.LibraryError)
	}
	return strings.Join(why, "; ")
}

// findLibkrunfw asks the loader for libkrunfw and returns the file it
// found, without keeping it loaded.
func findLibkrunfw() string {
	for _, name := range libkrunfwNames {
		if path, ok := locate(name, "krunfw_get_kernel"); ok {
			return path
		}
	}
	return ""
}

// String is a one-line summary for msbd's log.
func (f Finding) String() string {
	if f.Available() {
		return fmt.Sprintf("microVMs available: libkrun %s, KVM %s", f.Library, f.KVMDevice)
	}
	return "microVMs unavailable: " + f.Reason()
}
