package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// loopbackUp sets lo up in the network namespace of pid (runc creates the
// namespace but leaves lo down, and the sandbox has no CAP_NET_ADMIN over it
// worth granting). Only for a namespace the driver had runc create: a joined
// one (Spec.NetNSPath) is its creator's to set up.
func loopbackUp(pid int) error {
	target, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	defer unix.Close(target)
	return inNetNS(target, func() error { return setLinkUp("lo") })
}

// inNetNS runs fn on a locked OS thread that has entered the network
// namespace nsfd, and brings the thread back; a thread that cannot come back
// is left locked so Go discards it.
func inNetNS(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(self)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		if rerr := unix.Setns(self, unix.CLONE_NEWNET); rerr != nil {
			errc <- fmt.Errorf("setns back: %w", rerr) // thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// sysfs of a joined network namespace. Mounting sysfs needs CAP_SYS_ADMIN
// over the user namespace that owns the caller's network namespace. runc
// mounts /sys from inside the sandbox's user namespace, which owns a
// namespace runc made but not one the sandbox joins (made by msbd, owned by
// the host's user namespace): there the mount fails with EPERM. So for a
// joined namespace the driver mounts that sysfs itself, from the host, on
// a thread inside the namespace (sysfs shows the network devices of the
// mounter's namespace), read-only at sandboxes/<id>/sys, and the bundle
// bind-mounts it at /sys. The sandbox sees what it would with its own sysfs
// mount; binding the host's /sys instead (newer runc's fallback) would show
// it the host's network devices and every filesystem mounted below /sys.

func (d *Driver) sysfsDir(id string) string { return filepath.Join(d.SandboxDir(id), "sys") }

// mountSysfsHere mounts, read-only, a sysfs of the calling thread's network
// namespace on target (in its mount namespace), replacing one mounted there
// before (the namespace may have been made again since).
func mountSysfsHere(target string) error {
	if err := unmountIfMounted(target); err != nil {
		return err
	}
	if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mount("sysfs", target, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount sysfs on %s: %w", target, err)
	}
	return nil
}
