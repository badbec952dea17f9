package images

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The image config names the user its command runs as ("app", "1000:staff");
// the sandbox needs numeric ids, looked up in the image's own /etc/passwd and
// /etc/group. Those files are hostile input read by root on the host.

// ResolveUser turns an image config user ("", "1000", "1000:1000", "nobody",
// "app:app") into ids, reading /etc/passwd and /etc/group from the layers.
func ResolveUser(user string, layers []string) (uint32, uint32, error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := lookupID(u, "etc/passwd", layers)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q: %w", user, err)
	}
	gid := uid
	if hasGroup {
		gid, err = lookupID(g, "etc/group", layers)
		if err != nil {
			return 0, 0, fmt.Errorf("image user %q: %w", user, err)
		}
	} else if _, err := strconv.ParseUint(u, 10, 32); err != nil {
		// A named user's primary group is the passwd entry's gid field.
		if v, err := lookupField(u, "etc/passwd", layers, 3); err == nil {
			gid = v
		}
	}
	return uid, gid, nil
}

func lookupID(name, file string, layers []string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	return lookupField(name, file, layers, 2)
}

func lookupField(name, file string, layers []string, field int) (uint32, error) {
	for i := len(layers) - 1; i >= 0; i-- {
		data, found, err := readImageFile(layers[i], file)
		if err != nil {
			return 0, err
		}
		if !found {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) > field && f[0] == name {
				n, err := strconv.ParseUint(f[field], 10, 32)
				if err != nil {
					return 0, fmt.Errorf("malformed /%s entry for %q", file, name)
				}
				return uint32(n), nil
			}
		}
		return 0, fmt.Errorf("%q not found in /%s", name, file)
	}
	return 0, fmt.Errorf("no /%s in the image to look up %q", file, name)
}

// maxImageFileRead bounds what msbd reads of an image's /etc/passwd or /etc/group.
const maxImageFileRead = 1 << 20

// readImageFile reads name from one unpacked layer. The layer is hostile
// input read by root on the host: the path never leaves the layer (os.Root),
// a symlink is not followed, only a regular file is read (a fifo or device
// would hang or flood msbd) and at most maxImageFileRead bytes. found is false
// when the layer lacks the file; a whiteout (the file deleted by this layer)
// ends the search as an error.
func readImageFile(layer, name string) (data []byte, found bool, err error) {
	root, err := os.OpenRoot(layer)
	if err != nil {
		return nil, false, nil
	}
	defer root.Close()
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, false, nil
	}
	switch {
	case fi.Mode()&os.ModeCharDevice != 0:
		return nil, false, fmt.Errorf("/%s is deleted in the image", name)
	case !fi.Mode().IsRegular():
		return nil, false, fmt.Errorf("/%s in the image is not a regular file; msb only reads plain files of an image", name)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("/%s in the image is not a regular file", name)
	}
	data, err = io.ReadAll(io.LimitReader(f, maxImageFileRead))
	return data, true, err
}

// ReadImageFile reads name (a path inside the image, without its leading
// slash) from the topmost of layers that has it, under the same rules as the
// user lookup: never leaving the layer, never following a symlink, regular
// files only, at most max bytes. found is false when no layer has it or a
// layer deleted it.
func ReadImageFile(layers []string, name string, max int64) (data []byte, found bool, err error) {
	for i := len(layers) - 1; i >= 0; i-- {
		root, err := os.OpenRoot(layers[i])
		if err != nil {
			continue
		}
		fi, err := root.Lstat(name)
		if err != nil {
			root.Close()
			continue
		}
		switch {
		case fi.Mode()&os.ModeCharDevice != 0:
			root.Close()
			return nil, false, nil // a whiteout: deleted here
		case !fi.Mode().IsRegular():
			root.Close()
			return nil, false, fmt.Errorf("/%s in the image is not a regular file", name)
		}
		f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		root.Close()
		if err != nil {
			return nil, false, err
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, max+1))
		if err == nil && int64(len(data)) > max {
			return nil, false, fmt.Errorf("/%s in the image is larger than %d bytes", name, max)
		}
		return data, err == nil, err
	}
	return nil, false, nil
}
