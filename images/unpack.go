package images

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	copyBufferSize = 1 << 20
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// idMap maps the ids of an image to host ids. The zero value is the identity.
type idMap struct {
	set              bool
	hostUID, hostGID uint32
	size             uint32
}

func (m idMap) mapIDs(uid, gid int) (int, int, string) {
	if !m.set {
		if uid < 0 || gid < 0 {
			return 0, 0, fmt.Sprintf("negative owner %d:%d", uid, gid)
		}
		return uid, gid, ""
	}
	if uid < 0 || int64(uid) >= int64(m.size) {
		return 0, 0, fmt.Sprintf("uid %d is outside the sandbox user namespace (0-%d)", uid, int64(m.size)-1)
	}
	if gid < 0 || int64(gid) >= int64(m.size) {
		return 0, 0, fmt.Sprintf("gid %d is outside the sandbox user namespace (0-%d)", gid, int64(m.size)-1)
	}
	return int(m.hostUID) + uid, int(m.hostGID) + gid, ""
}

// unpacker writes one layer's tar stream beneath root. It is used by one goroutine.
type unpacker struct {
	ctx   context.Context
	root  *os.Root
	layer string // diffID, for errors
	ids   idMap
	limit int64 // maximum bytes of regular file content in this layer
	max   int64 // the image's limit, for messages
	size  int64 // bytes of regular file content written so far
	buf   []byte

	// cached descriptor of the directory last written to; stale is set when an entry
	// was removed, because a removal can change what a path resolves to.
	dir   string
	dirF  *os.File
	stale bool

	dirTimes []dirTime

	skippedDevices int
}

type dirTime struct {
	path         string
	atime, mtime time.Time
}

// Bounds on what a layer may hold besides file bytes (which the image size
// limit covers).
const (
	maxLayerEntries  = 1 << 21 // far above real images (tens of thousands)
	maxTrailingBytes = 1 << 20 // tar pads to 10 KiB records; some writers add more
)

// unpackTar reads a tar stream from r and writes it beneath root, refusing anything that
// would leave it. It returns the sha256 of the whole stream (the diffID) and the bytes of
// regular file content written.
func unpackTar(ctx context.Context, root *os.Root, r io.Reader, layer string, ids idMap, limit, max int64) (digest string, size int64, err error) {
	u := &unpacker{ctx: ctx, root: root, layer: layer, ids: ids, limit: limit, max: max, buf: make([]byte, copyBufferSize)}
	defer u.closeDir()

	h := sha256.New()
	src := io.TeeReader(bufio.NewReaderSize(r, copyBufferSize), h)
	tr := tar.NewReader(src)
	for entries := 0; ; entries++ {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, u.invalid("", "reading layer: "+err.Error())
		}
		// Empty entries cost no bytes but an inode each: bound them too.
		if entries >= maxLayerEntries {
			return "", 0, u.invalid(hdr.Name, fmt.Sprintf("more than %d entries in one layer", maxLayerEntries))
		}
		if err := u.entry(hdr, tr); err != nil {
			return "", 0, err
		}
	}
	// The diffID covers the whole stream, including the padding after the end
	// marker; padding is at most a record, so a layer that goes on long after
	// its end (gigabytes to hash for nothing) is refused.
	n, err := io.CopyBuffer(io.Discard, io.LimitReader(src, maxTrailingBytes+1), u.buf)
	if err != nil {
		return "", 0, u.invalid("", "reading layer: "+err.Error())
	}
	if n > maxTrailingBytes {
		return "", 0, u.invalid("", fmt.Sprintf("more than %d bytes after the end of the tar archive", maxTrailingBytes))
	}
	for _, d := range u.dirTimes {
		if err := u.setTimes(d.path, d.atime, d.mtime); err != nil {
			return "", 0, u.fail(d.path, err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), u.size, nil
}

func (u *unpacker) invalid(entry, reason string) error {
	return &InvalidImageError{Layer: u.layer, Entry: entry, Reason: reason}
}

// fail turns an error from writing entry into an InvalidImageError when the layer's
// content caused it, and wraps it with context otherwise.
func (u *unpacker) fail(entry string, err error) error {
	var inv *InvalidImageError
	switch {
	case errors.As(err, &inv):
		return err
	case isEscape(err):
		return u.invalid(entry, "path escapes the root")
	case errors.Is(err, syscall.ELOOP):
		return u.invalid(entry, "too many levels of symbolic links")
	case errors.Is(err, syscall.ENOTDIR):
		return u.invalid(entry, "a parent is not a directory")
	case errors.Is(err, syscall.ENAMETOOLONG):
		return u.invalid(entry, "name too long")
	}
	return fmt.Errorf("layer %s: entry %q: %w", shortDigest(u.layer), entry, err)
}

// isEscape reports whether err is os.Root refusing a path that leaves the root. The
// standard library does not export that error, so it is recognised by its text.
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// cleanName turns a tar entry name into a path relative to the layer root. A leading "/"
// or "./" is dropped (layers are relative to their root); any ".." that would climb above
// the root is refused, even if later components come back down.
func cleanName(name string) (string, bool) {
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(parts) == 0 {
				return "", false
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, c)
		}
	}
	if len(parts) == 0 {
		return ".", true
	}
	return strings.Join(parts, "/"), true
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, ok := cleanName(hdr.Name)
	if !ok {
		return u.invalid(hdr.Name, "path escapes the root")
	}
	dir, base := path.Split(rel)
	dir = path.Clean("./" + dir)

	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr, dir, base)
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return u.invalid(hdr.Name, "only a directory may name the layer root")
		}
	}

	uid, gid, reason := u.ids.mapIDs(hdr.Uid, hdr.Gid)
	if reason != "" {
		return u.invalid(hdr.Name, reason)
	}
	mode := uint32(hdr.Mode) & 07777
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if rel == "." {
			f, err := u.root.Open(".")
			if err != nil {
				return u.fail(hdr.Name, err)
			}
			defer f.Close()
			if err := fchownmod(int(f.Fd()), uid, gid, mode); err != nil {
				return u.fail(hdr.Name, err)
			}
		} else {
			pfd, err := u.dirFD(dir)
			if err != nil {
				return u.fail(hdr.Name, err)
			}
			if err := u.create(pfd, rel, base, true, func() error { return unix.Mkdirat(pfd, base, 0o700) }); err != nil {
				return u.fail(hdr.Name, err)
			}
			if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return u.fail(hdr.Name, err)
			}
			// base is a directory we made or found (never a symlink), so following is harmless.
			if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
				return u.fail(hdr.Name, err)
			}
		}
		u.dirTimes = append(u.dirTimes, dirTime{rel, atime, hdr.ModTime})
		return nil

	case tar.TypeReg, 0 /* TypeRegA */, tar.TypeCont:
		u.size += hdr.Size
		if u.size > u.limit {
			return u.invalid(hdr.Name, fmt.Sprintf("image unpacks to more than the limit of %d bytes", u.max))
		}
		pfd, err := u.dirFD(dir)
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		var fd int
		err = u.create(pfd, rel, base, false, func() (err error) {
			fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			return err
		})
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		f := os.NewFile(uintptr(fd), rel)
		err = u.writeFile(f, r, hdr.Size, uid, gid, mode, atime, hdr.ModTime)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		return nil

	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return u.invalid(hdr.Name, "symlink with an empty target")
		}
		pfd, err := u.dirFD(dir)
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		// The target is stored as written: absolute and relative symlinks are legitimate,
		// and nothing below ever follows one out of the root.
		if err := u.create(pfd, rel, base, false, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) }); err != nil {
			return u.fail(hdr.Name, err)
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return u.fail(hdr.Name, err)
		}
		if err := utimesNoFollow(pfd, base, atime, hdr.ModTime); err != nil {
			return u.fail(hdr.Name, err)
		}
		return nil

	case tar.TypeLink:
		target, ok := cleanName(hdr.Linkname)
		if !ok || target == "." {
			return u.invalid(hdr.Name, fmt.Sprintf("hardlink target %q is outside the layer", hdr.Linkname))
		}
		if target == rel {
			return nil
		}
		if _, err := u.dirFD(dir); err != nil {
			return u.fail(hdr.Name, err)
		}
		err := u.root.Link(target, rel)
		if errors.Is(err, fs.ErrExist) {
			if err = u.remove(rel); err == nil {
				err = u.root.Link(target, rel)
			}
		}
		switch {
		case err == nil:
			return nil
		case isEscape(err):
			return u.invalid(hdr.Name, fmt.Sprintf("hardlink target %q is outside the layer", hdr.Linkname))
		case errors.Is(err, fs.ErrNotExist):
			return u.invalid(hdr.Name, fmt.Sprintf("hardlink target %q does not exist in this layer", hdr.Linkname))
		case errors.Is(err, syscall.EPERM):
			return u.invalid(hdr.Name, fmt.Sprintf("hardlink target %q is a directory", hdr.Linkname))
		}
		return u.fail(hdr.Name, err)

	case tar.TypeFifo:
		// A fifo is harmless (it is only a rendezvous point inside the sandbox), so it is
		// created like tar would.
		pfd, err := u.dirFD(dir)
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		if err := u.create(pfd, rel, base, false, func() error { return unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0) }); err != nil {
			return u.fail(hdr.Name, err)
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return u.fail(hdr.Name, err)
		}
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return u.fail(hdr.Name, err)
		}
		return u.fail2(hdr.Name, utimesNoFollow(pfd, base, atime, hdr.ModTime))

	case tar.TypeChar, tar.TypeBlock:
		// Never create device nodes from an image: the sandbox gets its devices from the
		// runtime. (A 0:0 character device would also read as an overlay whiteout.)
		u.skippedDevices++
		return nil
	}
	return u.invalid(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
}

func (u *unpacker) fail2(entry string, err error) error {
	if err == nil {
		return nil
	}
	return u.fail(entry, err)
}

// writeFile copies size bytes of content into f and sets its owner, mode and times.
func (u *unpacker) writeFile(f *os.File, r io.Reader, size int64, uid, gid int, mode uint32, atime, mtime time.Time) error {
	// Hide f's ReadFrom so that CopyBuffer uses our large buffer.
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, r, u.buf)
	if err != nil {
		return err
	}
	if n != size {
		return io.ErrUnexpectedEOF
	}
	fd := int(f.Fd())
	// chown clears set-id bits, so the mode comes after it.
	if err := fchownmod(fd, uid, gid, mode); err != nil {
		return err
	}
	return futimens(fd, atime, mtime)
}

func fchownmod(fd, uid, gid int, mode uint32) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return unix.Fchmod(fd, mode)
}

// whiteout turns an AUFS-style whiteout entry into the overlayfs form.
func (u *unpacker) whiteout(hdr *tar.Header, dir, base string) error {
	switch {
	case base == whiteoutOpaque:
		f, err := u.openDir(dir)
		if err != nil {
			return u.fail(hdr.Name, err)
		}
		defer f.Close()
		if err := unix.Fsetxattr(int(f.Fd()), opaqueXattr, []byte("y"), 0); err != nil {
			return u.fail(hdr.Name, fmt.Errorf("setting %s: %w", opaqueXattr, err))
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		// Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) means nothing to overlayfs.
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return u.invalid(hdr.Name, "whiteout escapes the root")
	}
	uid, gid, reason := u.ids.mapIDs(0, 0)
	if reason != "" {
		return u.invalid(hdr.Name, reason)
	}
	pfd, err := u.dirFD(dir)
	if err != nil {
		return u.fail(hdr.Name, err)
	}
	rel := path.Join(dir, name)
	err = u.create(pfd, rel, name, false, func() error { return unix.Mknodat(pfd, name, unix.S_IFCHR|0o600, 0) })
	if err != nil {
		return u.fail(hdr.Name, err)
	}
	return u.fail2(hdr.Name, unix.Fchownat(pfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW))
}

// create runs mk, which makes base in the directory pfd. If something is already there
// it is replaced, as tar does, except that an existing directory is kept when the new
// entry is a directory too.
func (u *unpacker) create(pfd int, rel, base string, isDir bool, mk func() error) error {
	err := mk()
	if !errors.Is(err, syscall.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if isDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		u.stale = true
		if err := u.root.RemoveAll(rel); err != nil {
			return err
		}
	} else {
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			u.stale = true
		}
	}
	return mk()
}

func (u *unpacker) remove(rel string) error {
	u.stale = true
	return u.root.RemoveAll(rel)
}

// dirFD returns a descriptor of directory dir inside the root, creating it (and its
// parents, owned by the sandbox's root) if missing. The descriptor stays valid until the
// next call.
func (u *unpacker) dirFD(dir string) (int, error) {
	if u.dirF != nil && u.dir == dir && !u.stale {
		return int(u.dirF.Fd()), nil
	}
	u.closeDir()
	f, err := u.openDir(dir)
	if err != nil {
		return -1, err
	}
	u.dir, u.dirF, u.stale = dir, f, false
	return int(f.Fd()), nil
}

func (u *unpacker) closeDir() {
	if u.dirF != nil {
		u.dirF.Close()
		u.dirF = nil
	}
}

// openDir opens directory dir through the root (so symlinks are followed only while they
// stay inside it), creating missing components.
func (u *unpacker) openDir(dir string) (*os.File, error) {
	f, err := u.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := u.mkdirAll(dir); err != nil {
			return nil, err
		}
		f, err = u.root.Open(dir)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.IsDir() {
		f.Close()
		return nil, syscall.ENOTDIR
	}
	return f, nil
}

// mkdirAll creates the missing directories of dir with mode 0755, owned by the
// sandbox's root user, like tar does for parents that have no entry of their own.
func (u *unpacker) mkdirAll(dir string) error {
	uid, gid, reason := u.ids.mapIDs(0, 0)
	if reason != "" {
		return u.invalid(dir, reason)
	}
	p := ""
	for _, c := range strings.Split(dir, "/") {
		p = path.Join(p, c)
		err := u.root.Mkdir(p, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := u.root.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// setTimes sets the times of rel (a directory written earlier) without following a
// symlink that may have replaced it since.
func (u *unpacker) setTimes(rel string, atime, mtime time.Time) error {
	if rel == "." {
		f, err := u.root.Open(".")
		if err != nil {
			return err
		}
		defer f.Close()
		return futimens(int(f.Fd()), atime, mtime)
	}
	dir, base := path.Split(rel)
	pfd, err := u.dirFD(path.Clean("./" + dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed by a later entry
	}
	if err != nil {
		return err
	}
	err = utimesNoFollow(pfd, base, atime, mtime)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func utimesNoFollow(dirfd int, name string, atime, mtime time.Time) error {
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, atime, mtime time.Time) error {
	ts := [2]unix.Timespec{timespec(atime), timespec(mtime)}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return &os.SyscallError{Syscall: "utimensat", Err: errno}
	}
	return nil
}
