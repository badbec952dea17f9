package krun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The runner's own root. Once it has loaded libkrun and libkrunfw and made
// the guest's root, the runner leaves the host's file system: it mounts a
// small tmpfs on the sandbox directory's empty vmroot/, binds into it only
// what the VMM opens by path, pivots into it and lets the old root go. A
// VMM taken over from the guest (through a virtio device bug, say) then
// finds no host path to open or bind a socket at, whatever the modes of
// the host's files. The runner is also PID 1 of a PID namespace of its own
// (see spawn), so its /proc, mounted fresh, shows no host process (their
// command lines, their roots). The tree, read-only but for what is bound:
//
//	/rootfs     the guest's root (the overlay with its bind mounts), shared over virtio-fs
//	/vm         the sandbox's vm/ (the agent's vsock socket, the console)
//	/dev/kvm    the KVM device (libkrun opens this path); /dev/null, /dev/urandom
//	/proc       its PID namespace's: libkrun's virtio-fs server reopens its
//	            files through /proc/self/fd
const (
	vmRootDirName = "vmroot" // in the sandbox directory: the mount point, empty on the host
	inRootfs      = "/rootfs"
	inVMDir       = "/vm"
)

// vmRootDevices are the host devices bound into the runner's /dev, besides
// the KVM device.
var vmRootDevices = []string{"/dev/null", "/dev/urandom"}

// enterVMRoot builds the runner's root on cfg.VMRoot and pivots into it,
// returning cfg with the paths libkrun is given as they are inside.
func enterVMRoot(cfg RunnerConfig) (RunnerConfig, error) {
	mnt := cfg.VMRoot
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, "mode=0755,size=64k,nr_inodes=64"); err != nil {
		return cfg, fmt.Errorf("runner root: tmpfs on %s: %w", mnt, err)
	}
	bind := func(src, target string, dir, rec bool) error {
		p := filepath.Join(mnt, target)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if dir {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		} else if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
		flags := uintptr(unix.MS_BIND)
		if rec {
			flags |= unix.MS_REC
		}
		if err := unix.Mount(src, p, "", flags, ""); err != nil {
			return fmt.Errorf("runner root: bind %s on %s: %w", src, target, err)
		}
		return nil
	}
	binds := []struct {
		src, target string
		dir, rec    bool
	}{
		{cfg.Root, inRootfs, true, true},
		{cfg.VMDir, inVMDir, true, false},
		{cfg.KVMDevice, DefaultKVMDevice, false, false},
	}
	for _, dev := range vmRootDevices {
		binds = append(binds, struct {
			src, target string
			dir, rec    bool
		}{dev, dev, false, false})
	}
	for _, b := range binds {
		if err := bind(b.src, b.target, b.dir, b.rec); err != nil {
			return cfg, err
		}
	}
	// A new proc is allowed only while a full one is visible: the host's,
	// until the pivot.
	proc := filepath.Join(mnt, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		return cfg, err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return cfg, fmt.Errorf("runner root: mount proc: %w", err)
	}
	// pivot_root(".", "."): the old root ends up on top of the new one,
	// and is then detached with everything under it.
	if err := unix.Chdir(mnt); err != nil {
		return cfg, err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return cfg, fmt.Errorf("runner root: pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return cfg, fmt.Errorf("runner root: detaching the host's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return cfg, err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, ""); err != nil {
		return cfg, fmt.Errorf("runner root: read-only: %w", err)
	}
	if _, err := os.Stat(filepath.Join(inRootfs, ".")); err != nil {
		return cfg, fmt.Errorf("runner root: %w", err)
	}
	in := cfg
	in.Root = inRootfs
	in.VMDir = inVMDir
	in.VsockSocket = filepath.Join(inVMDir, filepath.Base(cfg.VsockSocket))
	in.Console = filepath.Join(inVMDir, filepath.Base(cfg.Console))
	in.KVMDevice = DefaultKVMDevice
	return in, nil
}

// preloadLibkrunfw loads libkrunfw (the guest kernel) before the runner
// leaves the host's file system; libkrun dlopens it by soname at boot.
func preloadLibkrunfw() error {
	for _, name := range libkrunfwNames {
		if preload(name) {
			return nil
		}
	}
	return errors.New("libkrunfw not found: libkrun cannot boot a guest kernel without it")
}
