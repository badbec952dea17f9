// Package tarcopy is the file copy format of msbctl cp: a tar stream written
// from a file or directory tree, and an extractor that treats every stream as
// hostile. The same code runs on both ends — in msb-agent inside the sandbox,
// and in msbctl on the host — so it imports only the standard library and
// golang.org/x/sys/unix.
//
// A stream holds one top-level entry (a file, a directory or a symlink) named
// after the source's base name; a directory's entries follow as "top/...".
// Regular files, directories and symlinks are copied with their permission
// bits and modification times; other kinds (devices, fifos, sockets) are left
// out with a warning, and hardlinked files are written as separate files.
package tarcopy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// bufSize is the copy buffer of file contents: memory per copy is this plus
// the tar headers, whatever the size of the tree.
const bufSize = 256 << 10

// Write writes the file, directory tree or symlink at src to w as a tar
// stream. The top-level entry is named after src's base name; a symlink at
// src itself is followed (the caller named it), symlinks inside a directory
// are copied as symlinks. warn, if not nil, is told about entries left out.
func Write(w io.Writer, src string, warn func(string)) error {
	if warn == nil {
		warn = func(string) {}
	}
	top := TopName(src)
	resolved, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, unwrapPath(err))
	}
	root, err := os.OpenRoot(filepath.Dir(resolved))
	if err != nil {
		return fmt.Errorf("%s: %w", src, unwrapPath(err))
	}
	defer root.Close()
	tw := tar.NewWriter(w)
	wr := &writer{tw: tw, root: root, warn: warn, buf: make([]byte, bufSize)}
	base := filepath.Base(resolved)
	if resolved == "/" {
		base = "."
	}
	if err := wr.entry(base, top, true); err != nil {
		return err
	}
	return tw.Close()
}

// TopName is the name of the top-level entry Write gives a stream of src:
// src's base name, or "." when src names a directory's contents ("DIR/.",
// as with docker cp, ".", "/" or a path ending in ".."), whose stream is
// "./" and then the contents' own names. A receiver passes it as
// Options.Top, so a stream can only write what was asked for.
func TopName(src string) string {
	top := filepath.Base(filepath.Clean(src))
	if top == "/" || top == "." || top == ".." || src == "." || strings.HasSuffix(src, "/.") {
		return "."
	}
	return top
}

type writer struct {
	tw   *tar.Writer
	root *os.Root
	warn func(string)
	buf  []byte
}

// entry writes the entry at rel (a path in root) under the tar name name,
// recursing into directories.
func (w *writer) entry(rel, name string, isTop bool) error {
	fi, err := w.root.Lstat(rel)
	if err != nil {
		if !isTop && errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walked
		}
		return fmt.Errorf("%s: %w", name, unwrapPath(err))
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(fi.Mode().Perm()) | setidBits(fi.Mode()),
		ModTime: fi.ModTime(),
		Format:  tar.FormatPAX, // keeps sub-second mtimes and long names
	}
	switch {
	case fi.Mode().IsRegular():
		return w.file(rel, hdr)
	case fi.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name = name + "/"
		if err := w.tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := w.root.Open(rel)
		if err != nil {
			return fmt.Errorf("%s: %w", name, unwrapPath(err))
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, unwrapPath(err))
		}
		slices.Sort(names)
		for _, n := range names {
			child := n
			if name != "." {
				child = name + "/" + n
			}
			if err := w.entry(path.Join(rel, n), child, false); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := w.root.Readlink(rel)
		if err != nil {
			return fmt.Errorf("%s: %w", name, unwrapPath(err))
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		hdr.Mode = 0o777
		return w.tw.WriteHeader(hdr)
	default:
		if isTop {
			return fmt.Errorf("%s: a %s is not copied; copy regular files, directories and symlinks", name, kindName(fi.Mode()))
		}
		w.warn(fmt.Sprintf("%s: left out: a %s is not copied", name, kindName(fi.Mode())))
		return nil
	}
}

// file writes one regular file. Its header comes from the opened file, so a
// file swapped for something else after the Lstat is copied as what it is now
// or refused, never mis-sized.
func (w *writer) file(rel string, hdr *tar.Header) error {
	// O_NONBLOCK: a fifo swapped in after the Lstat must not hang the open
	// (it is then refused below); regular files ignore the flag.
	f, err := w.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: changed into a %s while being copied; copy again", hdr.Name, kindName(fi.Mode()))
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = fi.Size()
	hdr.Mode = int64(fi.Mode().Perm()) | setidBits(fi.Mode())
	hdr.ModTime = fi.ModTime()
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(w.tw, io.LimitReader(onlyReader{f}, hdr.Size), w.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, unwrapPath(err))
	}
	if n < hdr.Size {
		return fmt.Errorf("%s: shrank from %d to %d bytes while being copied; copy again", hdr.Name, hdr.Size, n)
	}
	return nil
}

// onlyReader hides *os.File's WriterTo/ReaderFrom so CopyBuffer uses our buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func setidBits(m fs.FileMode) int64 {
	var b int64
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

func kindName(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// unwrapPath drops *PathError's own path: our messages name the entry.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// firstComponent splits "a/b/c" into "a" and "b/c".
func firstComponent(name string) (string, string) {
	first, rest, _ := strings.Cut(name, "/")
	return first, rest
}
