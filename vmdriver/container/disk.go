package container

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// Disk quota. A sandbox with a disk limit (Spec.DiskBytes) gets a
// filesystem of that size of its own: a sparse file sandboxes/<id>/disk.img
// holding an ext4 (made with lazy initialisation and no journal, so making
// it costs a few tens of milliseconds and takes no space up front),
// attached to a loop device and mounted at sandboxes/<id>/disk. Its
// writable layer (disk/upper, disk/work) and its agent directory
// (disk/agent, bind-mounted at sandboxes/<id>/agent, the path the sandbox
// and msbd know) live there, so together they can never hold more than the
// limit: writes past it fail inside with ENOSPC, and the state directory's
// filesystem (msb.db, other sandboxes) never fills up through one sandbox.
//
// Project quotas would cost nothing per sandbox, but need an ext4 or XFS
// state directory mounted with prjquota, which hosts rarely have; the
// state directory here is a plain ext4. The loop device is attached with
// autoclear: it goes away with the last unmount of the filesystem, also
// after a lazy one. The disk stays mounted while the sandbox is stopped or
// suspended (its logs and exit code are read from it) and goes with Delete
// of the sandbox's directory.
//
// The size is fixed when the disk is made: a changed spec.resources.disk
// applies to a re-created sandbox. A sandbox whose writable layer an older
// msbd made in sandboxes/<id>/upper keeps it there, without a limit.

func (d *Driver) diskImage(id string) string { return filepath.Join(d.SandboxDir(id), "disk.img") }
func (d *Driver) diskDir(id string) string   { return filepath.Join(d.SandboxDir(id), "disk") }

// writableLayer returns sandbox id's overlay upper and work directories:
// on its disk when it has one.
func (d *Driver) writableLayer(id string) (upper, work string) {
	base := d.SandboxDir(id)
	if _, err := os.Stat(d.diskImage(id)); err == nil {
		base = d.diskDir(id)
	}
	return filepath.Join(base, "upper"), filepath.Join(base, "work")
}

// diskDirs are the directories on a sandbox's disk: the overlay's upper
// and work directories and the agent directory.
var diskDirs = [3]string{"upper", "work", "agent"}

// minDiskBytes is the smallest disk made: ext4 needs room for its own
// metadata.
const minDiskBytes = 16 << 20

// wantsDisk reports whether sandbox id (directory dir) has, or is to get,
// a disk of its own.
func (d *Driver) wantsDisk(spec vmdriver.Spec) bool {
	if _, err := os.Stat(d.diskImage(spec.ID)); err == nil {
		return true
	}
	if _, err := os.Stat(filepath.Join(d.SandboxDir(spec.ID), "upper")); err == nil {
		return false // made without one: keeps its layer where it is
	}
	return spec.DiskBytes > 0
}

// mountDisk makes (once) and mounts sandbox id's disk, with the agent
// directory on it (bound at agentMountPoint when hostBind: a backend that
// shares it from the host; the container driver binds it in each start's
// namespace); it returns the writable layer's upper and work dirs.
func (d *Driver) mountDisk(spec vmdriver.Spec, hostBind bool) (upper, work string, err error) {
	id, dir := spec.ID, d.diskDir(spec.ID)
	mounted, err := isMountPoint(dir)
	if err != nil {
		return "", "", err
	}
	if !mounted {
		img := d.diskImage(id)
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", "", err
		}
		placed := false
		if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
			if disk, ok := d.diskPool.take(spec.DiskBytes); ok {
				if err := disk.place(img, dir); err != nil {
					slog.Warn("disk pool: placing a ready disk failed; making one", "sandbox", id, "err", err)
				} else {
					placed = true
				}
			}
			if _, err := os.Stat(img); !placed && errors.Is(err, os.ErrNotExist) {
				if err := d.newDiskImage(img, max(spec.DiskBytes, minDiskBytes)); err != nil {
					return "", "", err
				}
			}
		}
		if !placed {
			if err := mountImage(img, dir); err != nil {
				return "", "", err
			}
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", "", err
	}
	upper, work = filepath.Join(dir, diskDirs[0]), filepath.Join(dir, diskDirs[1])
	agentSrc, agentDir := filepath.Join(dir, diskDirs[2]), d.agentMountPoint(id)
	for _, p := range []string{upper, work, agentSrc, agentDir} {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", "", err
		}
	}
	if hostBind {
		if err := bindAgentDir(agentSrc, agentDir); err != nil {
			return "", "", err
		}
	}
	return upper, work, nil
}

// bindAgentDir bind-mounts the agent directory src (on a disk) on target
// unless something is mounted there.
func bindAgentDir(src, target string) error {
	if ok, err := isMountPoint(target); err != nil || ok {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount the agent directory: %w", err)
	}
	return nil
}

// newDiskImage writes a new disk of size bytes at img: a sparse copy of a
// template made once per size with mkfs (StateDir/disk-templates, root
// only). Copying the few MiB an empty ext4 holds takes milliseconds where
// mkfs takes tens (every disk of a size shares the filesystem UUID, which
// nothing here uses).
func (d *Driver) newDiskImage(img string, size int64) error {
	tmpl, err := d.diskTemplate(size)
	if err != nil {
		return err
	}
	return writeImage(img, func(tmp string) error { return copySparse(tmpl, tmp, size) })
}

// writeImage makes a disk image at img by fill, which writes it at a
// temporary name: a crash never leaves half a disk under img.
func writeImage(img string, fill func(tmp string) error) error {
	tmp := img + ".tmp"
	os.Remove(tmp)
	err := fill(tmp)
	if err == nil {
		err = os.Rename(tmp, img)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("making the sandbox's disk: %w", err)
	}
	return nil
}

// diskTemplate returns the template disk of size bytes, making it first.
func (d *Driver) diskTemplate(size int64) (string, error) {
	d.diskMu.Lock()
	defer d.diskMu.Unlock()
	dir := filepath.Join(d.opts.StateDir, "disk-templates")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, fmt.Sprintf("ext4-%d.img", size))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return p, makeDiskImage(p, size)
}

// copySparse copies the data extents of src to a new file dst of size
// bytes, leaving the holes holes.
func copySparse(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = func() error {
		if err := out.Truncate(size); err != nil {
			return err
		}
		for off := int64(0); off < size; {
			data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				return nil // only a hole is left
			}
			if err != nil {
				return err
			}
			hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
			if err != nil {
				return err
			}
			for o := data; o < hole; {
				src, dst := o, o
				n, err := unix.CopyFileRange(int(in.Fd()), &src, int(out.Fd()), &dst, int(hole-o), 0)
				if err != nil {
					return err
				}
				if n == 0 {
					return fmt.Errorf("copy_file_range: no progress at %d", o)
				}
				o += int64(n)
			}
			off = hole
		}
		return nil
	}()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// makeDiskImage writes a sparse file of size bytes at img holding an empty
// ext4 (see writeImage).
func makeDiskImage(img string, size int64) error {
	return writeImage(img, func(tmp string) error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return mkfsExt4(tmp)
	})
}

// mkfsExt4 makes an ext4 on file: no journal (the disk is a scratch layer
// of one sandbox; the host's own state is elsewhere), no reserved blocks,
// inode tables initialised lazily by the kernel.
func mkfsExt4(file string) error {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("mkfs.ext4 not found (apt-get install e2fsprogs): %w", err)
	}
	out, err := exec.Command(mkfs, "-q", "-F", "-O", "^has_journal", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountImage attaches img to a free loop device (autoclear) and mounts its
// ext4 on target, nodev: the pool's detached mount (diskpool.go), attached.
func mountImage(img, target string) error {
	mnt, err := detachedImageMount(img)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the disk %s on %s: %w", img, target, err)
	}
	return nil
}

// attachLoop binds img to a free loop device and returns it open.
func attachLoop(img string) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop devices: no free one: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			// /dev without devtmpfs: make the node.
			if err = unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err == nil || errors.Is(err, os.ErrExist) {
				dev, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("loop device %s: %w", path, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) || attempt >= 20 {
			return nil, fmt.Errorf("loop device %s: configure: %w", path, err)
		}
		// Another process took it between GET_FREE and here: next one.
	}
}

var _ vmdriver.DiskReporter = (*Driver)(nil)

// DiskUsage implements vmdriver.DiskReporter: bytes used and the size of
// sandbox id's disk while it is mounted.
func (d *Driver) DiskUsage(id string) (used, limit int64, ok bool) {
	if validID(id) != nil {
		return 0, 0, false
	}
	dir := d.diskDir(id)
	if m, err := isMountPoint(dir); err != nil || !m {
		return 0, 0, false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, false
	}
	bs := int64(st.Bsize)
	fi, err := os.Stat(d.diskImage(id))
	if err != nil {
		return 0, 0, false
	}
	return (int64(st.Blocks) - int64(st.Bfree)) * bs, fi.Size(), true
}
