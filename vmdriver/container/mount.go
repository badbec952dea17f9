package container

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts layers (lowest first) + upper at target from the host's
// (initial) user namespace. A short option string goes through mount(2); one
// longer than a page (many layers, long paths) through fsconfig "lowerdir+"
// (kernel 6.8+), which takes each layer separately.
//
// The overlay is nodev but not nosuid: setuid programs (sudo, ping, su) are
// legitimate in an image and work inside the sandbox between its own users,
// while no_new_privs on every sandbox process already keeps them from gaining
// anything there. On the host, a setuid file of the image is setuid to a
// mapped uid, so no host user may reach one: the layers sit in the image
// store's 0700 directories and the mounted rootfs (and the writable layer)
// below sandboxes/<id>/, which only root and the sandboxes' root group may
// search (see Driver.lockDown). Keep it that way rather than adding nosuid.
func mountOverlay(layers []string, upper, work, target string) error {
	if len(layers) == 0 {
		return errors.New("overlay: no image layers")
	}
	lower := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- { // overlay wants the highest first
		l := layers[i]
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("overlay: layer path %q contains ':' or ','", l)
		}
		lower = append(lower, l)
	}
	data := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) < unix.Getpagesize()-1 {
		if err := unix.Mount("overlay", target, "overlay", unix.MS_NODEV, data); err != nil {
			return fmt.Errorf("mount overlay on %s: %w", target, err)
		}
		return nil
	}
	return mountOverlayFsconfig(lower, upper, work, target)
}

// mountRootfs mounts the sandbox's overlay: its image layers as they are
// when it runs in the shared id range, or idmapped to its own range.
func (d *Driver) mountRootfs(layers []string, ids sandboxIDs, upper, work, target string) error {
	if ids.Shared {
		return mountOverlay(layers, upper, work, target)
	}
	nsfd, err := d.idmapFor(ids)
	if err != nil {
		return err
	}
	fds, err := idmappedClones(layers, nsfd)
	if err != nil {
		return err
	}
	// The overlay holds the detached mounts; the descriptors can go.
	defer closeAll(fds)
	return mountOverlay(fdPaths(fds), upper, work, target)
}

func mountOverlayFsconfig(lower []string, upper, work, target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay %s=%s: %w (kernel 6.8+ needed for more than a page of layer paths)", k, v, err)
		}
		return nil
	}
	if err := set("source", "overlay"); err != nil {
		return err
	}
	for _, l := range lower {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("overlay create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount overlay to %s: %w", target, err)
	}
	return nil
}

// mountPoints returns the mount points at or below dir in this mount
// namespace, deepest first.
func mountPoints(dir string) ([]string, error) {
	data, err := readMountTable()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	// The table has a few lines per sandbox: look at the fields only of
	// lines that name dir (escaped as the kernel writes it) at all.
	needle := []byte(escapeMountinfo(dir))
	var out []string
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if !bytes.Contains(line, needle) {
			continue
		}
		fields := strings.Fields(string(line))
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first, and at the same depth the last mounted first (an
	// overlay before the disk its upper dir is on); a path mounted twice
	// appears twice, and unmounting twice is right.
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

// unmountIfMounted unmounts what is mounted at or below path when path
// itself is a mount point (one statx; the table is read only then). A start
// calls it on paths an older msbd mounted in the host's table, which its
// own namespace inherits; nothing is mounted there otherwise.
func unmountIfMounted(path string) error {
	if ok, err := isMountPoint(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	} else if !ok {
		return nil
	}
	return unmountAll(path)
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, …).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint reports whether path is where something is mounted. It asks
// statx whether path is the root of its mount (STATX_ATTR_MOUNT_ROOT, Linux
// 5.8+): constant cost, where reading /proc/self/mountinfo grows with every
// sandbox's mounts. Measured with 100 sandboxes starting at once, reading
// mountinfo here took 13% of the host's CPU (40% of msbd's), several reads
// per start: quadratic in the number of sandboxes. A kernel without the
// attribute gets the mountinfo answer.
func isMountPoint(path string) (bool, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, 0, &stx)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, nil
	case err == nil && stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0:
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	return isMountPointSlow(path)
}

// isMountPointSlow is isMountPoint by the mount table.
func isMountPointSlow(path string) (bool, error) {
	mps, err := mountPoints(path)
	if err != nil {
		return false, err
	}
	return slices.Contains(mps, filepath.Clean(path)), nil
}

// unmountAll unmounts everything at or below dir. A busy mount is retried for
// a while (a process of a just-killed sandbox may still be exiting), then
// detached lazily so the sandbox never stays half-deleted.
func unmountAll(dir string) error { return unmountAllBut(dir) }

// unmountAllBut is unmountAll leaving the mount points keep (and what is
// below them) mounted.
func unmountAllBut(dir string, keep ...string) error {
	for attempt := 0; ; attempt++ {
		mps, err := mountPoints(dir)
		if err != nil {
			return err
		}
		mps = slices.DeleteFunc(mps, func(mp string) bool {
			for _, k := range keep {
				if within(mp, k) {
					return true
				}
			}
			return false
		})
		if len(mps) == 0 {
			return nil
		}
		var busy error
		for _, mp := range mps {
			err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW)
			switch {
			case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			case errors.Is(err, unix.EBUSY):
				if attempt >= 50 {
					if err := unix.Unmount(mp, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
						return fmt.Errorf("unmount %s: %w", mp, err)
					}
				} else {
					busy = err
				}
			default:
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
		if busy == nil {
			// Every one found is unmounted: no need to read the table
			// again (it grows with every sandbox, and a delete read it
			// twice).
			return nil
		}
		time.Sleep(20 * time.Millisecond)
		if attempt > 60 {
			return fmt.Errorf("unmount under %s: still mounted", dir)
		}
	}
}
