package agent

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the symlinks followed resolving one destination (the
// kernel's own limit).
const maxLinks = 40

// resolveCopyDest turns the destination of a copy into the sandbox into a
// path with no symlink in it, following only links trust admits, so the
// root agent never writes somewhere the workload redirected it to. The
// result goes to tarcopy.Extract with NoFollowDest, which refuses a link
// swapped in afterwards. A missing last component is kept (the copy's new
// name); every other component must exist.
//
// Each step opens the next name below the directory reached so far with
// O_PATH|O_NOFOLLOW; ".." is the physical parent of that directory (never
// above "/", the sandbox's root).
func resolveCopyDest(p string, trust func(link, dir *unix.Stat_t) bool) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%s: not an absolute path", p)
	}
	dirfd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer func() { unix.Close(dirfd) }()
	var out []string // the real directories walked, then the last name
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		last := restIsEmpty(todo)
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				up, err := unix.Openat(dirfd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return "", fmt.Errorf("%s: %w", "/"+strings.Join(out, "/"), err)
				}
				unix.Close(dirfd)
				dirfd, out = up, out[:len(out)-1]
			}
			continue
		}
		here := "/" + strings.Join(append(out[:len(out):len(out)], c), "/")
		fd, err := unix.Openat(dirfd, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && last {
			return here, nil
		}
		if err != nil {
			if err == unix.ENOENT {
				err = errors.New("no such directory; create it first")
			}
			return "", fmt.Errorf("%s: %w", here, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return "", fmt.Errorf("%s: %w", here, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			var dst unix.Stat_t
			err := unix.Fstat(dirfd, &dst)
			target := ""
			if err == nil {
				target, err = readlinkFd(fd)
			}
			unix.Close(fd)
			if err != nil {
				return "", fmt.Errorf("%s: %w", here, err)
			}
			if !trust(&st, &dst) {
				return "", fmt.Errorf("%s is a symlink (to %s) that the sandbox's user could have planted, and a copy into the sandbox never follows one; copy to the path it points to, if that is meant", here, target)
			}
			if links++; links > maxLinks {
				return "", fmt.Errorf("%s: too many levels of symlinks", p)
			}
			if strings.HasPrefix(target, "/") {
				root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return "", err
				}
				unix.Close(dirfd)
				dirfd, out = root, nil
			}
			todo = append(strings.Split(target, "/"), todo...)
		case unix.S_IFDIR:
			unix.Close(dirfd)
			dirfd, out = fd, append(out, c)
		default:
			unix.Close(fd)
			if !last {
				return "", fmt.Errorf("%s: not a directory", here)
			}
			return here, nil
		}
	}
	return "/" + strings.Join(out, "/"), nil
}

// restIsEmpty tells whether only "" and "." components remain.
func restIsEmpty(todo []string) bool {
	for _, c := range todo {
		if c != "" && c != "." {
			return false
		}
	}
	return true
}

func readlinkFd(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// trustedLink says which symlinks on the way to a copy's destination the
// agent (root) follows: all of them when the workload runs as root (it
// could write anywhere the link leads anyway), otherwise only a link owned
// by root in a root-owned directory no one else may write, such as an
// image's /lib -> usr/lib. A link the workload made, or could have swapped
// in, is not followed.
func trustedLink(workloadUID uint32) func(link, dir *unix.Stat_t) bool {
	return func(link, dir *unix.Stat_t) bool {
		if workloadUID == 0 {
			return true
		}
		return link.Uid == 0 && dir.Uid == 0 && dir.Mode&0o022 == 0
	}
}
