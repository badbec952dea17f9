package tarcopy

import (
	"archive/tar"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// checkLinkTarget admits a symlink only if whoever follows it later stays
// inside the copied entry (the root for a directory's contents or Into).
// The target must be relative, and ".." may only lead it ("../../lib/x"),
// never follow a name ("d/../x"): that name may itself be a symlink (this
// stream's own, made before or after this one), and ".." after a link climbs
// from wherever the link led, so a lexical check says nothing about it. A
// leading ".." climbs from the link's own directory through real
// directories (openDir never follows a symlink and a directory is never
// replaced by one), so there the lexical check is the physical one; names
// that follow only descend, and a symlink among them is held to the same
// rule. The link then resolves inside the entry, however links chain.
func (x *extractor) checkLinkTarget(hdr *tar.Header, name string) error {
	t := hdr.Linkname
	if t == "" || strings.ContainsRune(t, 0) {
		return &Error{Entry: hdr.Name, Reason: "a symlink with an empty or malformed target"}
	}
	if strings.HasPrefix(t, "/") {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a symlink to the absolute path %q, which would point outside the destination (copy its target by its own path instead)", t)}
	}
	named := false
	for _, c := range strings.Split(t, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return &Error{Entry: hdr.Name, Reason: fmt.Sprintf(`a symlink to %q, with ".." after a name, which could climb out through another symlink`, t)}
			}
		default:
			named = true
		}
	}
	resolved := path.Join(path.Dir(name), t)
	if x.opts.Into || x.top == "." {
		if resolved != "." && !filepath.IsLocal(resolved) {
			return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a symlink to %q, which points outside the destination", t)}
		}
		return nil
	}
	top, _ := firstComponent(name)
	if first, _ := firstComponent(resolved); first != top || !filepath.IsLocal(resolved) {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a symlink to %q, which points outside %q, the entry this copy is of", t, x.top)}
	}
	return nil
}

// hardlink links to a regular file this copy created: never to one that
// was in the destination before (a sandbox must not make a second name
// for the user's key), nor to anything outside the copied entry.
func (x *extractor) hardlink(hdr *tar.Header, pfd int, base string) error {
	if strings.HasPrefix(hdr.Linkname, "/") {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to the absolute path %q, outside the destination", hdr.Linkname)}
	}
	target := path.Clean(hdr.Linkname)
	if hdr.Linkname == "" || !filepath.IsLocal(target) {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, outside the destination", hdr.Linkname)}
	}
	target, err := x.mapName(hdr.Name, target)
	if err != nil {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, outside %q, the entry this copy is of", hdr.Linkname, x.top)}
	}
	tdir, tbase := path.Split(target)
	tfd, err := x.openDir(strings.TrimSuffix(tdir, "/"), hdr.Name, false)
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
	id := idOf(&st)
	if _, ok := x.files[id]; !ok {
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, which this copy did not create", hdr.Linkname)}
	}
	if err := x.clear(pfd, base, hdr); err != nil {
		return err
	}
	// linkat without AT_SYMLINK_FOLLOW links the name itself, never through a link.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return x.fail(hdr, "create hardlink", err)
	}
	// The name was looked up twice: if it changed in between, undo.
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || idOf(&st) != id {
		unix.Unlinkat(pfd, base, 0)
		return &Error{Entry: hdr.Name, Reason: fmt.Sprintf("a hardlink to %q, which changed while being linked", hdr.Linkname)}
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
	if st.Nlink <= 1 {
		delete(x.files, idOf(&st))
	}
	return nil
}
