package container

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The disk pool. Making a sandbox's disk — a sparse copy of the template,
// a loop device (LOOP_CONFIGURE alone is ~14 ms here) and an ext4 mount —
// took 18–24 ms of every start, on the path to Ready. The pool makes a few
// disks of the default size ahead of time, each left as a detached mount
// (fsmount: in no mount table, so it costs other mount namespaces nothing
// and nothing is left behind when msbd ends); a start takes one by renaming
// its image into the sandbox directory and attaching its mount there.
// Refills happen in the background, one disk at a time.
//
// A pooled disk is an empty filesystem made from the same template as one
// made at the start, so a sandbox cannot tell the two apart. The images of
// a pool that msbd left (it ended with them unclaimed) are removed when the
// next msbd starts.

// diskPoolReady is how many disks the pool keeps ready.
const diskPoolReady = 3

type diskPool struct {
	d    *Driver
	size int64
	dir  string

	mu      sync.Mutex
	ready   []pooledDisk
	filling bool
	// failed stops refills after the first disk the pool could not make
	// (no loop devices, say): starts then make and report their own.
	failed bool
	// closed: released, refills stop (tests; msbd's pool ends with it).
	closed bool
	seq    atomic.Uint64
}

// pooledDisk is a ready disk: its image in the pool directory and its
// mounted filesystem, detached.
type pooledDisk struct {
	img string
	mnt int
}

// newDiskPool returns a pool of disks of size bytes under
// StateDir/disk-pool, removing what an earlier msbd left there, and starts
// filling it.
func newDiskPool(d *Driver, size int64) (*diskPool, error) {
	p := &diskPool{d: d, size: max(size, minDiskBytes), dir: filepath.Join(d.opts.StateDir, "disk-pool")}
	if err := os.RemoveAll(p.dir); err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	if err := os.Mkdir(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk pool: %w", err)
	}
	p.refill()
	return p, nil
}

// take hands out a ready disk of size bytes, if the pool has one, and
// starts a refill.
func (p *diskPool) take(size int64) (pooledDisk, bool) {
	if p == nil || max(size, minDiskBytes) != p.size {
		return pooledDisk{}, false
	}
	p.mu.Lock()
	n := len(p.ready)
	if n == 0 {
		p.mu.Unlock()
		p.refill()
		return pooledDisk{}, false
	}
	disk := p.ready[n-1]
	p.ready = p.ready[:n-1]
	p.mu.Unlock()
	p.refill()
	return disk, true
}

// refill starts the filler unless it runs.
func (p *diskPool) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filling || p.failed || p.closed || len(p.ready) >= diskPoolReady {
		return
	}
	p.filling = true
	go p.fill()
}

func (p *diskPool) fill() {
	for {
		p.mu.Lock()
		if len(p.ready) >= diskPoolReady || p.closed {
			p.filling = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		disk, err := p.make()
		p.mu.Lock()
		if err != nil {
			p.filling, p.failed = false, true
			p.mu.Unlock()
			slog.Warn("disk pool: cannot make disks ahead; each start makes its own", "err", err)
			return
		}
		if p.closed {
			disk.release()
		} else {
			p.ready = append(p.ready, disk)
		}
		p.mu.Unlock()
	}
}

// close releases the ready disks and stops refills.
func (p *diskPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, disk := range p.ready {
		disk.release()
	}
	p.ready = nil
}

// release unmounts disk (its loop device detaches) and removes its image.
func (disk pooledDisk) release() {
	unix.Close(disk.mnt)
	os.Remove(disk.img)
}

// make writes one disk image into the pool and mounts it, detached.
func (p *diskPool) make() (pooledDisk, error) {
	img := filepath.Join(p.dir, strconv.FormatUint(p.seq.Add(1), 10)+".img")
	if err := p.d.newDiskImage(img, p.size); err != nil {
		return pooledDisk{}, err
	}
	mnt, err := detachedImageMount(img)
	if err != nil {
		os.Remove(img)
		return pooledDisk{}, err
	}
	// The directories mountDisk makes, made here: a new filesystem's
	// first inodes cost milliseconds (bitmaps and inode tables are read
	// through the loop device), which the start no longer pays.
	for _, dir := range diskDirs {
		if err := unix.Mkdirat(mnt, dir, 0o700); err != nil {
			unix.Close(mnt)
			os.Remove(img)
			return pooledDisk{}, fmt.Errorf("disk pool: mkdir %s: %w", dir, err)
		}
	}
	return pooledDisk{img: img, mnt: mnt}, nil
}

// place moves disk's image to img and attaches its filesystem on target.
// On failure the disk is released; an image already moved stays, and the
// caller mounts it the slow way.
func (disk pooledDisk) place(img, target string) error {
	defer unix.Close(disk.mnt)
	if err := os.Rename(disk.img, img); err != nil {
		os.Remove(disk.img)
		return err
	}
	if err := unix.MoveMount(disk.mnt, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the disk on %s: %w", target, err)
	}
	return nil
}

// detachedImageMount attaches img to a loop device (autoclear) and returns
// its ext4 mounted nodev but attached nowhere.
func detachedImageMount(img string) (int, error) {
	dev, err := attachLoop(img)
	if err != nil {
		return -1, err
	}
	// The superblock holds the device from here on; with autoclear it
	// detaches when the last mount of it goes.
	defer dev.Close()
	fsfd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen ext4: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", dev.Name()); err != nil {
		return -1, fmt.Errorf("ext4 source %s: %w", dev.Name(), err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("ext4 on %s (%s): %w", dev.Name(), img, err)
	}
	mnt, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return -1, fmt.Errorf("fsmount ext4 %s: %w", img, err)
	}
	return mnt, nil
}
