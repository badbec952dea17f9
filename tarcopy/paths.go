package tarcopy

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openDir opens the directory rel below the root one component at a time,
// never following a symlink (O_NOFOLLOW on each step). With create, missing
// ones are made (and recorded as this copy's).
func (x *extractor) openDir(rel, entry string, create bool) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	if rel == "" {
		return fd, nil
	}
	walked := ""
	for _, c := range strings.Split(rel, "/") {
		if walked == "" {
			walked = c
		} else {
			walked += "/" + c
		}
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil {
				if _, ok := x.created[walked]; !ok {
					x.created[walked] = -1
				}
			}
			if err == nil || err == unix.EEXIST {
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
	fd, err := x.openDir(x.rename, x.rename, false)
	if err != nil {
		return err
	}
	unix.Close(x.root)
	x.root = fd
	x.rootPath = filepath.Join(x.rootPath, x.rename)
	x.rename = ""
	return nil
}

// openRoot opens the directory a copy lands in. With noFollow it walks from
// "/" one component at a time with O_NOFOLLOW, so a symlink swapped in
// anywhere on the way since the caller resolved the path is refused.
func openRoot(dir string, noFollow bool) (int, error) {
	if !noFollow {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			return -1, fmt.Errorf("%s: no such directory; create it first", dir)
		}
		if err != nil {
			return -1, fmt.Errorf("%s: %w", dir, err)
		}
		return fd, nil
	}
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("/: %w", err)
	}
	walked := ""
	for _, c := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		if c == "" {
			continue
		}
		walked += "/" + c
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		switch err {
		case nil:
		case unix.ENOENT:
			return -1, fmt.Errorf("%s: no such directory; create it first", walked)
		case unix.ELOOP, unix.ENOTDIR:
			return -1, fmt.Errorf("%s is a symlink or not a directory, which this copy does not follow; name the real path", walked)
		default:
			return -1, fmt.Errorf("%s: %w", walked, err)
		}
		fd = next
	}
	return fd, nil
}
