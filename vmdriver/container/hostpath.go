package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLinkInHostPath is wrapped by every refusal of a host path that holds a
// symbolic link: msbd follows none, so what one sandbox writes into a shared
// directory (a link where a directory was) cannot redirect another
// sandbox's volume to the host's files.
var ErrLinkInHostPath error = refusedVolume{"a host path must not contain a symbolic link"}

// noLinks is how openat2 resolves host paths: no symbolic link in any
// component, and no /proc magic link either.
const noLinks = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// hostPathFD is one host path opened without following links: the
// descriptors (O_PATH) of the path itself and of the directory that holds
// it, so the identity checks see exactly the objects the mount will use.
type hostPathFD struct {
	Path   string
	Parent int // the containing directory ("/" for "/")
	Leaf   int
}

func (h *hostPathFD) Close() {
	if h.Leaf != h.Parent {
		unix.Close(h.Leaf)
	}
	unix.Close(h.Parent)
}

// openHostPath opens path (absolute; "." and ".." are refused rather than
// interpreted lexically) without following a symbolic link in any
// component. A path that holds one is refused with an error naming the
// component and wrapping ErrLinkInHostPath.
//
// openat2 with RESOLVE_NO_SYMLINKS does it in the kernel; where openat2 is
// missing (ENOSYS) or filtered (EPERM under some seccomp profiles) a walk
// opens one component at a time with O_NOFOLLOW.
func openHostPath(path string) (*hostPathFD, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is not an absolute path", path)
	}
	for _, c := range strings.Split(path, "/") {
		if c == "." || c == ".." {
			return nil, fmt.Errorf("%q: %q components are not allowed: write the path they lead to", path, c)
		}
	}
	path = filepath.Clean(path)
	h, err := openat2HostPath(path)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return walkHostPath(path)
	}
	if errors.Is(err, unix.ELOOP) {
		// Say which component: the walk finds it (and if the link went
		// away meanwhile, opens the path as it is now, safely).
		return walkHostPath(path)
	}
	return h, err
}

func openat2HostPath(path string) (*hostPathFD, error) {
	how := func(flags uint64, resolve uint64) *unix.OpenHow {
		return &unix.OpenHow{Flags: flags | unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve}
	}
	open := func(dirfd int, name string, h *unix.OpenHow) (int, error) {
		for range 8 { // EAGAIN: a concurrent rename or mount; try again
			fd, err := unix.Openat2(dirfd, name, h)
			if err != unix.EAGAIN {
				return fd, err
			}
		}
		return -1, unix.EAGAIN
	}
	dir, base := filepath.Split(path)
	parent, err := open(unix.AT_FDCWD, dir, how(unix.O_DIRECTORY, noLinks))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Clean(dir), Err: err}
	}
	if base == "" { // path is "/"
		return &hostPathFD{Path: path, Parent: parent, Leaf: parent}, nil
	}
	leaf, err := open(parent, base, how(0, noLinks|unix.RESOLVE_BENEATH))
	if err != nil {
		unix.Close(parent)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &hostPathFD{Path: path, Parent: parent, Leaf: leaf}, nil
}

// walkHostPath opens path one component at a time: O_PATH|O_NOFOLLOW opens
// a link itself rather than its target, and fstat tells it apart.
func walkHostPath(path string) (*hostPathFD, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	parent := fd
	cur := "/"
	for _, c := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		if c == "" {
			continue
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		cur = filepath.Join(cur, c)
		if err != nil {
			unix.Close(fd)
			if parent != fd {
				unix.Close(parent)
			}
			return nil, &os.PathError{Op: "open", Path: cur, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			unix.Close(fd)
			if parent != fd {
				unix.Close(parent)
			}
			return nil, &os.PathError{Op: "stat", Path: cur, Err: err}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(next)
			unix.Close(fd)
			if parent != fd {
				unix.Close(parent)
			}
			return nil, &LinkError{Path: path, Component: cur}
		}
		if parent != fd {
			unix.Close(parent)
		}
		parent, fd = fd, next
	}
	return &hostPathFD{Path: path, Parent: parent, Leaf: fd}, nil
}

// LinkError names the component of a host path that is a symbolic link.
type LinkError struct {
	Path, Component string
}

func (e *LinkError) Error() string {
	if e.Component == e.Path {
		return fmt.Sprintf("%s is a symbolic link, and msbd follows no link in a host path: write the path it leads to", e.Path)
	}
	return fmt.Sprintf("%s: %s is a symbolic link, and msbd follows no link in a host path: write the path it leads to", e.Path, e.Component)
}

func (e *LinkError) Unwrap() error { return ErrLinkInHostPath }
