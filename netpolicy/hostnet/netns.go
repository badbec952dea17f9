package hostnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsfsMagic is NSFS_MAGIC: statfs of a bind-mounted namespace file says
// this, an ordinary (stale) file says its directory's filesystem.
const nsfsMagic = 0x6e736673

// privateMount makes dir a mount point of its own with private
// propagation, so the namespace bind mounts under it neither appear in
// nor vanish with other mount namespaces that share "/" (systemd makes
// "/" shared by default), the way `ip netns` treats /run/netns.
func privateMount(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	err := unix.Mount("", dir, "", unix.MS_PRIVATE, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(dir, dir, "", unix.MS_BIND, ""); err == nil {
			err = unix.Mount("", dir, "", unix.MS_PRIVATE, "")
		}
	}
	if err != nil {
		return fmt.Errorf("hostnet: make %s a private mount point: %w", dir, err)
	}
	return nil
}

// isNetNS reports whether path is a live namespace bind mount (after a
// reboot the file is still there but nothing is mounted on it).
func isNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == nsfsMagic
}

// createNetNS makes a new network namespace and bind-mounts it on path.
// The namespace belongs to msbd's (the initial) user namespace, so root
// in a sandbox's own user namespace cannot reconfigure it. Inside: lo up
// and IPv6 disabled, so the sandbox has no link-local or other v6 path.
func createNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("hostnet: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends up in another network
		// namespace, so the runtime must discard it when this goroutine
		// returns rather than run other goroutines on it.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			// /proc/sys/net is that of the writing thread's namespace.
			for _, k := range []string{"all", "default"} {
				if err := writeSysctl("net/ipv6/conf/"+k+"/disable_ipv6", "1"); err != nil {
					return err
				}
			}
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				return fmt.Errorf("lo up: %w", err)
			}
			src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
			if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount: %w", err)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("hostnet: network namespace %s: %w", path, err)
	}
	return nil
}

// removeNetNS unmounts and removes path; a missing file is not an error.
// MNT_DETACH: a process still inside keeps the namespace alive, but it is
// no longer reachable by path.
func removeNetNS(path string) error {
	for isNetNS(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("hostnet: unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("hostnet: %w", err)
	}
	return nil
}

// writeSysctl writes a /proc/sys value (key relative to /proc/sys) for
// the calling thread's network namespace.
func writeSysctl(key, val string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644); err != nil {
		return fmt.Errorf("hostnet: sysctl %s=%s: %w", key, val, err)
	}
	return nil
}
