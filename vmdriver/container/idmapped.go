package container

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Idmapped image layers. Layers are unpacked once, owned by the shared id
// range (the first slot of --uid-base/--uid-size), and shared by every
// sandbox. A sandbox with its own range sees them through idmapped mounts:
// each layer directory is cloned as a detached mount (open_tree) whose
// idmapping (mount_setattr MOUNT_ATTR_IDMAP) shows shared id S+n as the
// sandbox's P+n, and the overlay takes those detached mounts as its lower
// layers (by /proc/self/fd path). Once the overlay holds them the
// descriptors are closed: nothing of the layers appears in the mount table
// but the overlay. runc 1.1 cannot make idmapped mounts itself.

// idmappedLayers opens an idmapped clone of every layer, mapping ids
// [from, from+size) on disk to [to, to+size). The caller closes the
// returned descriptors (after mounting the overlay).
func idmappedLayers(layers []string, uids, gids idMap) ([]int, error) {
	nsfd, err := idmapUserNS(uids, gids)
	if err != nil {
		return nil, err
	}
	defer unix.Close(nsfd)
	return idmappedClones(layers, nsfd)
}

// idmapFor returns the idmapping user namespace (shared range to ids'
// range) of ids' slot, made once per slot and kept: a slot's mapping never
// changes, and slots are handed out again after a delete.
func (d *Driver) idmapFor(ids sandboxIDs) (int, error) {
	d.idmapMu.Lock()
	defer d.idmapMu.Unlock()
	if fd, ok := d.idmapNS[ids.Slot]; ok {
		return fd, nil
	}
	fd, err := idmapUserNS(idMap{d.opts.HostUID, ids.UID, ids.Size}, idMap{d.opts.HostGID, ids.GID, ids.Size})
	if err != nil {
		return -1, err
	}
	if d.idmapNS == nil {
		d.idmapNS = map[uint32]int{}
	}
	d.idmapNS[ids.Slot] = fd
	return fd, nil
}

// idmappedClones opens an idmapped clone of every layer with the
// idmapping of the user namespace nsfd.
func idmappedClones(layers []string, nsfd int) ([]int, error) {
	var fds []int
	for _, l := range layers {
		fd, err := idmappedClone(l, nsfd)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// idmappedClone returns a detached clone of the mount at dir with the
// idmapping of the user namespace nsfd.
func idmappedClone(dir string, nsfd int) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", dir, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(nsfd)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmapped mount of %s: %w", dir, err)
	}
	return fd, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// fdPaths are the /proc/self/fd paths of fds.
func fdPaths(fds []int) []string {
	out := make([]string, len(fds))
	for i, fd := range fds {
		out[i] = fmt.Sprintf("/proc/self/fd/%d", fd)
	}
	return out
}

// ProbeIDMappedMounts tells whether idmapped mounts of directories under
// dir work (the kernel and dir's filesystem must support them): it maps a
// fresh directory and checks the owner it shows. The error says why not.
func ProbeIDMappedMounts(dir string) error {
	tmp, err := os.MkdirTemp(dir, ".idmap-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	const from, to = 3000000000, 3000065536
	if err := os.Chown(tmp, from, from); err != nil {
		return err
	}
	fds, err := idmappedLayers([]string{tmp}, idMap{from, to, 1}, idMap{from, to, 1})
	if err != nil {
		return err
	}
	defer closeAll(fds)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(fdPaths(fds)[0], "."), &st); err != nil {
		return fmt.Errorf("idmapped mount: %w", err)
	}
	if st.Uid != to || st.Gid != to {
		return fmt.Errorf("idmapped mount shows owner %d:%d, want %d:%d", st.Uid, st.Gid, to, to)
	}
	return nil
}
