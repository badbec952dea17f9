package tarcopy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune Extract.
type Options struct {
	// Into requires dest to be an existing directory and extracts the stream's
	// names into it unchanged (a tar made by another tool, msbctl cp -).
	Into bool
	// KeepSetID keeps setuid and setgid bits. Off, they are cleared: on the
	// host, a sandbox must not be able to hand out a set-uid program.
	KeepSetID bool
	// Chown, if set, owns every created entry by UID:GID (the sandbox's user
	// when the agent extracts as root).
	Chown    bool
	UID, GID int
}

// Error is an entry Extract refused: the stream tried to write outside the
// destination, or something that is not copied. Nothing was written for it
// and the copy stopped there.
type Error struct {
	Entry  string // the name as the stream gave it
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("refused entry %q: %s; nothing was written for it and the copy stopped", e.Entry, e.Reason)
}

// Extract writes the tar stream r below dest, streaming (file contents pass
// through a fixed buffer). The stream is hostile input: it never writes
// outside dest. Names must be relative and free of "..", every directory on
// the way to an entry must be a real directory (a symlink there is never
// followed, even one the stream itself created a moment before), symlinks
// and hardlinks must point inside dest, and devices and fifos are refused.
// Existing non-directories in the way are replaced, never written through.
//
// Where the stream lands follows docker cp: if dest is an existing directory
// (or Options.Into), the stream's names are created inside it; otherwise the
// stream's top-level entry is created as dest itself (its parent must exist).
func Extract(r io.Reader, dest string, opts Options) error {
	x := &extractor{opts: opts, buf: make([]byte, bufSize)}
	dest = filepath.Clean(dest)
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		x.rootPath = dest
	case opts.Into && err == nil:
		return fmt.Errorf("%s is not a directory; a tar stream is extracted into a directory", dest)
	case opts.Into:
		return fmt.Errorf("%s: %w; create the directory first", dest, unwrapPath(err))
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %w", dest, unwrapPath(err))
	default:
		// dest is missing or a non-directory: the top entry becomes dest.
		x.rootPath = filepath.Dir(dest)
		x.rename = filepath.Base(dest)
		if x.rename == "/" || x.rename == "." || x.rename == ".." {
			return fmt.Errorf("%s: cannot be the name of a copy", dest)
		}
	}
	fd, err := unix.Open(x.rootPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return fmt.Errorf("%s: no such directory; create it first", x.rootPath)
		}
		return fmt.Errorf("%s: %w", x.rootPath, err)
	}
	x.root = fd
	defer func() { unix.Close(x.root) }() // mkdirTop may swap it
	if err := x.run(tar.NewReader(r)); err != nil {
		return err
	}
	return x.finishDirs()
}

type extractor struct {
	opts     Options
	rootPath string
	root     int    // fd of the directory everything lands in
	rename   string // non-empty: the top component becomes this
	top      string // the stream's top component, once seen
	buf      []byte
	dirs     []dirAttrs // modes and mtimes applied last, children first
}

type dirAttrs struct {
	name  string
	mode  uint32
	mtime time.Time
}

func (x *extractor) run(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the tar stream: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := x.localName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			if hdr.Typeflag == tar.TypeDir {
				// "./": the destination itself. Leading a stream copied to a
				// new name, it is a stream of contents: the new directory
				// is made and they go into it.
				if x.rename != "" && x.top == "" {
					if err := x.mkdirTop(); err != nil {
						return err
					}
				}
				continue
			}
			return &Error{Entry: hdr.Name, Reason: "a non-directory named like the destination itself"}
		}
		if err := x.entry(tr, hdr, name); err != nil {
			return err
		}
	}
}

// localName checks a stream name and maps it below the root.
func (x *extractor) localName(raw string) (string, error) {
	if raw == "" || strings.ContainsRune(raw, 0) {
		return "", &Error{Entry: raw, Reason: "an empty or malformed name"}
	}
	if strings.HasPrefix(raw, "/") {
		return "", &Error{Entry: raw, Reason: "an absolute name, which would land outside the destination"}
	}
	name := path.Clean(raw)
	if name != "." && !filepath.IsLocal(name) {
		return "", &Error{Entry: raw, Reason: `a name with "..", which would land outside the destination`}
	}
	if x.rename == "" || name == "." {
		return name, nil
	}
	first, rest := firstComponent(name)
	if x.top == "" {
		x.top = first
	} else if first != x.top {
		return "", &Error{Entry: raw, Reason: fmt.Sprintf("a second top-level entry after %q; copying one file or directory to a new name takes one", x.top)}
	}
	if rest == "" {
		return x.rename, nil
	}
	return x.rename + "/" + rest, nil
}

// entry creates one entry. name is local and not ".".
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header, name string) error {
	parent, base := path.Split(name)
	pfd, err := x.openDir(strings.TrimSuffix(parent, "/"), hdr.Name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := uint32(hdr.Mode) & 0o7777
	if !x.opts.KeepSetID {
		mode &^= 0o6000
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return x.fail(hdr, "replace", err)
			}
			err = unix.ENOENT
		}
		if err == unix.ENOENT {
			// Owner-writable until the end, when its real mode is set.
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return x.fail(hdr, "create directory", err)
			}
			if err := x.chown(pfd, base, hdr); err != nil {
				return err
			}
		} else if err != nil {
			return x.fail(hdr, "stat", err)
		}
		x.dirs = append(x.dirs, dirAttrs{name: name, mode: mode, mtime: hdr.ModTime})
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := x.clear(pfd, base, hdr); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return x.fail(hdr, "create", err)
		}
		f := os.NewFile(uintptr(fd), name)
		_, err = io.CopyBuffer(onlyWriter{f}, tr, x.buf)
		if err == nil {
			err = f.Chmod(os.FileMode(mode&0o777) | modeBits(mode))
		}
		if err == nil && x.opts.Chown {
			err = f.Chown(x.opts.UID, x.opts.GID)
		}
		if err == nil {
			err = unix.UtimesNanoAt(pfd, base, times(hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return x.fail(hdr, "write", unwrapPath(err))
		}
		return nil
	case tar.TypeSymlink:
		if err := x.checkLinkTarget(hdr, name); err != nil {
			return err
		}
		if err := x.clear(pfd, base, hdr); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return x.fail(hdr, "create symlink", err)
		}
		if err := x.chown(pfd, base, hdr); err != nil {
			return err
		}
		if err := unix.UtimesNanoAt(pfd, base, times(hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return x.fail(hdr, "set the time of", err)
		}
		return nil
	case tar.TypeLink:
		return x.hardlink(hdr, pfd, base)
	case tar.TypeChar, tar.TypeBlock:
		return &Error{Entry: hdr.Name, Reason: "a device node, which copies never create"}
	case tar.TypeFifo:
		return &Error{Entry: hdr.Name, Reason: "a fifo, which copies never create"}
	default:
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("an entry of tar type %q, which copies do not handle", hdr.Typeflag)}
	}
}

// checkLinkTarget admits a symlink only if its target, read from where the
// link is, stays inside the root. Every directory on the way is a real one
// (openDir never follows a symlink), so the lexical check is the physical one.
func (x *extractor) checkLinkTarget(hdr *tar.Header, name string) error {
	t := hdr.Linkname
	if t == "" {
		return &Error{Entry: hdr.Name, Reason: "a symlink with an empty target"}
	}
	if strings.HasPrefix(t, "/") {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a symlink to the absolute path %q, which would point outside the destination (copy its target by its own path instead)", t)}
	}
	if !filepath.IsLocal(path.Join(path.Dir(name), t)) {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a symlink to %q, which points outside the destination", t)}
	}
	return nil
}

// hardlink links to an entry already extracted: a regular file inside the root.
func (x *extractor) hardlink(hdr *tar.Header, pfd int, base string) error {
	if strings.HasPrefix(hdr.Linkname, "/") {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to the absolute path %q, outside the destination", hdr.Linkname)}
	}
	target := path.Clean(hdr.Linkname)
	if !filepath.IsLocal(target) {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, outside the destination", hdr.Linkname)}
	}
	if x.rename != "" {
		first, rest := firstComponent(target)
		if first != x.top {
			return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, outside what this copy wrote", hdr.Linkname)}
		}
		target = x.rename
		if rest != "" {
			target += "/" + rest
		}
	}
	tdir, tbase := path.Split(target)
	tfd, err := x.openDir(strings.TrimSuffix(tdir, "/"), hdr.Name)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, which is not there: %v", hdr.Linkname, err)}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, which is not a regular file", hdr.Linkname)}
	}
	if err := x.clear(pfd, base, hdr); err != nil {
		return err
	}
	// linkat without AT_SYMLINK_FOLLOW links the name itself, never through a link.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return x.fail(hdr, "create hardlink", err)
	}
	return nil
}

// clear removes an existing non-directory at base, so nothing is written
// through a symlink or into another file's inode. A directory stays and is
// an error: a file does not replace a tree.
func (x *extractor) clear(pfd int, base string, hdr *tar.Header) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return x.fail(hdr, "stat", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return &Error{Entry: hdr.Name, Reason: "a non-directory where a directory exists; remove the directory first"}
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return x.fail(hdr, "replace", err)
	}
	return nil
}

// openDir opens the directory rel below the root one component at a time,
// never following a symlink (O_NOFOLLOW on each step), creating missing ones.
func (x *extractor) openDir(rel, entry string) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	if rel == "" {
		return fd, nil
	}
	for _, c := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || err == unix.EEXIST {
				next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return -1, &Error{Entry: entry, Reason: fmt.Sprintf("its directory %q is a symlink or not a directory, and copies never follow one", c)}
		}
		if err != nil {
			return -1, &Error{Entry: entry, Reason: fmt.Sprintf("cannot open its directory %q: %v", c, err)}
		}
		fd = next
	}
	return fd, nil
}

// mkdirTop creates the destination directory for a stream of contents.
func (x *extractor) mkdirTop() error {
	err := unix.Mkdirat(x.root, x.rename, 0o755)
	if err != nil && err != unix.EEXIST {
		return fmt.Errorf("%s: %w", filepath.Join(x.rootPath, x.rename), err)
	}
	fd, err := x.openDir(x.rename, x.rename)
	if err != nil {
		return err
	}
	unix.Close(x.root)
	x.root = fd
	x.rename = ""
	return nil
}

func (x *extractor) chown(pfd int, base string, hdr *tar.Header) error {
	if !x.opts.Chown {
		return nil
	}
	if err := unix.Fchownat(pfd, base, x.opts.UID, x.opts.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return x.fail(hdr, "chown", err)
	}
	return nil
}

// finishDirs applies directory modes and mtimes, deepest first, once nothing
// more is written into them.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		parent, base := path.Split(d.name)
		pfd, err := x.openDir(strings.TrimSuffix(parent, "/"), d.name)
		if err != nil {
			return err
		}
		mode := d.mode
		if !x.opts.KeepSetID {
			mode &^= 0o6000
		}
		err = unix.Fchmodat(pfd, base, mode, 0)
		if err == nil {
			err = unix.UtimesNanoAt(pfd, base, times(d.mtime), unix.AT_SYMLINK_NOFOLLOW)
		}
		unix.Close(pfd)
		if err != nil {
			return fmt.Errorf("%s: set mode and time: %w", d.name, err)
		}
	}
	return nil
}

func (x *extractor) fail(hdr *tar.Header, op string, err error) error {
	return fmt.Errorf("%s: %s: %w", hdr.Name, op, err)
}

// times is utimensat's pair for t; a stream without a time leaves it as now.
func times(t time.Time) []unix.Timespec {
	if t.IsZero() {
		return []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	return []unix.Timespec{ts, ts}
}

func modeBits(m uint32) os.FileMode {
	var b os.FileMode
	if m&0o4000 != 0 {
		b |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		b |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		b |= os.ModeSticky
	}
	return b
}

// onlyWriter hides *os.File's ReaderFrom so CopyBuffer uses our buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
