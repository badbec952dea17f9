package tarcopy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune Extract.
type Options struct {
	// Into requires dest to be an existing directory and extracts the stream's
	// names into it unchanged (a tar made by another tool, msbctl cp -).
	Into bool
	// Top is the name the stream's top-level entry must have: TopName of
	// the source the caller asked for ("." for a directory's contents).
	// Every entry must be that entry or below it, so a stream landing in an
	// existing directory cannot write any other name there. Empty, the
	// first entry's top component is taken (the stream is still held to
	// one top-level entry); a receiver of a hostile stream sets it.
	Top string
	// NoFollowDest refuses a symlink at dest or on the way to it (dest must
	// be absolute): the agent resolves the links it trusts itself and hands
	// over a path the sandbox must not be able to redirect mid-copy.
	NoFollowDest bool
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
// outside dest, and outside the entry it is a copy of (Options.Top) unless
// it is a directory's contents. Names must be relative and free of "..",
// every directory on the way to an entry must be a real directory (a symlink
// there is never followed, even one the stream itself created a moment
// before), symlinks must point inside the copied entry without climbing
// after a name (checkLinkTarget), hardlinks may only name files this copy
// created, and devices, fifos and sparse files are refused. Existing
// non-directories in the way are replaced, never written through; the
// modes and times of directories this copy did not create are left alone.
//
// Where the stream lands follows docker cp: if dest is an existing directory
// (or Options.Into), the stream's names are created inside it; otherwise the
// stream's top-level entry is created as dest itself (its parent must exist).
//
// Memory is a fixed buffer plus a record per directory and per regular file
// this copy created (not per header: a repeated entry updates its record).
func Extract(r io.Reader, dest string, opts Options) error {
	x := newExtractor(opts)
	if x.top != "" && x.top != "." && !validTop(x.top) {
		return fmt.Errorf("copy of %q: not a file name", x.top)
	}
	dest = filepath.Clean(dest)
	stat := os.Stat
	if opts.NoFollowDest {
		if !filepath.IsAbs(dest) {
			return fmt.Errorf("%s: not an absolute path", dest)
		}
		stat = os.Lstat
	}
	fi, err := stat(dest)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink, which this copy does not follow; name the path it points to", dest)
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
	fd, err := openRoot(x.rootPath, opts.NoFollowDest)
	if err != nil {
		return err
	}
	x.root = fd
	defer func() { unix.Close(x.root) }() // mkdirTop may swap it
	if err := x.run(tar.NewReader(r)); err != nil {
		return err
	}
	return x.finishDirs()
}

func newExtractor(opts Options) *extractor {
	x := &extractor{
		opts:    opts,
		top:     opts.Top,
		buf:     make([]byte, bufSize),
		created: map[string]int{},
		files:   map[fileID]struct{}{},
	}
	if opts.Into {
		x.top = ""
	}
	return x
}

type extractor struct {
	opts     Options
	rootPath string
	root     int    // fd of the directory everything lands in
	rename   string // non-empty: the top component becomes this
	top      string // the stream's top component: Options.Top or the first seen
	buf      []byte
	dirs     []dirAttrs // modes and mtimes applied last, deepest first
	// created holds the directories this copy made (local names): the
	// index of their attributes in dirs, or -1 while no header gave any.
	created map[string]int
	// files are the regular files this copy made and still has: the only
	// ones a hardlink may name.
	files map[fileID]struct{}
}

type dirAttrs struct {
	name  string
	mode  uint32
	mtime time.Time
}

type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }

func validTop(n string) bool {
	return n != ".." && !strings.ContainsAny(n, "/\x00")
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
			if hdr.Typeflag != tar.TypeDir {
				return &Error{Entry: hdr.Name, Reason: "a non-directory named like the destination itself"}
			}
			// "./": the destination itself. It leads a stream of a
			// directory's contents; copied to a new name, the new
			// directory is made and they go into it.
			if !x.opts.Into {
				if x.top == "" {
					x.top = "."
				}
				if x.top != "." {
					return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a directory's contents, but this copy is of %q", x.top)}
				}
				if x.rename != "" {
					if err := x.mkdirTop(); err != nil {
						return err
					}
				}
			}
			continue
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
	if x.opts.Into || name == "." {
		return name, nil
	}
	if x.top == "" {
		x.top, _ = firstComponent(name)
	}
	if x.top == "." && x.rename != "" {
		// Contents without their "./" lead: the new directory all the same.
		if err := x.mkdirTop(); err != nil {
			return "", err
		}
	}
	return x.mapName(raw, name)
}

// mapName holds a local name to the copied entry and renames its top.
func (x *extractor) mapName(raw, name string) (string, error) {
	if x.opts.Into || x.top == "." {
		return name, nil
	}
	first, rest := firstComponent(name)
	if first != x.top {
		return "", &Error{Entry: raw, Reason: fmt.Sprintf("outside %q, the entry this copy is of (a copy writes that entry and what is below it, nothing else)", x.top)}
	}
	if x.rename == "" {
		return name, nil
	}
	if rest == "" {
		return x.rename, nil
	}
	return x.rename + "/" + rest, nil
}

// entry creates one entry. name is local and not ".".
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header, name string) error {
	parent, base := path.Split(name)
	pfd, err := x.openDir(strings.TrimSuffix(parent, "/"), hdr.Name, true)
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
		made := false
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := x.clear(pfd, base, hdr); err != nil {
				return err
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
			made = true
		} else if err != nil {
			return x.fail(hdr, "stat", err)
		}
		x.dirAttrs(name, made, mode, hdr.ModTime)
		return nil
	case tar.TypeReg, tar.TypeRegA:
		if sparse(hdr) {
			return &Error{Entry: hdr.Name, Reason: "a sparse file, which copies do not take (its holes would be written out in full)"}
		}
		return x.file(tr, hdr, pfd, base, name, mode)
	case tar.TypeGNUSparse:
		return &Error{Entry: hdr.Name, Reason: "a sparse file, which copies do not take (its holes would be written out in full)"}
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

// file writes one regular file: exactly the bytes the stream carries.
func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, pfd int, base, name string, mode uint32) error {
	if err := x.clear(pfd, base, hdr); err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return x.fail(hdr, "create", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil {
		x.files[idOf(&st)] = struct{}{}
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
}

// sparse tells a PAX sparse file (archive/tar reports it as a regular file
// and expands its holes): a few bytes of stream could fill the disk.
func sparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// dirAttrs records the mode and time a directory header gives, for a
// directory this copy made; one this copy did not make keeps its own.
func (x *extractor) dirAttrs(name string, made bool, mode uint32, mtime time.Time) {
	i, ok := x.created[name]
	switch {
	case ok && i >= 0:
		x.dirs[i] = dirAttrs{name: name, mode: mode, mtime: mtime}
	case ok || made:
		x.created[name] = len(x.dirs)
		x.dirs = append(x.dirs, dirAttrs{name: name, mode: mode, mtime: mtime})
	}
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

// finishDirs applies the modes and mtimes of the directories this copy
// made, deepest first, once nothing more is written into them.
func (x *extractor) finishDirs() error {
	sort.SliceStable(x.dirs, func(i, j int) bool {
		return strings.Count(x.dirs[i].name, "/") > strings.Count(x.dirs[j].name, "/")
	})
	for _, d := range x.dirs {
		parent, base := path.Split(d.name)
		pfd, err := x.openDir(strings.TrimSuffix(parent, "/"), d.name, false)
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
