package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// Volumes reach the sandbox in three steps, none of which follows a
// symbolic link or looks a name up twice:
//
//  1. openHostPath opens the host path with no link in any component (what
//     one sandbox writes into a shared directory cannot redirect another's
//     volume to the host's files);
//  2. volumeGuard compares what was opened, by device and inode and by the
//     filesystem path of its mount, with msbd's state directory: a volume
//     never is, holds or lies inside it, nor inside anything mounted below it
//     (a bind mount of it elsewhere included);
//  3. stageVolumes clones the opened directory as a new mount (open_tree on
//     the descriptor, not a path: plain bind, no submounts) and attaches it
//     at sandboxes/<id>/volumes/<i>, a path only root can change; runc binds
//     that. The staging mount is gone once runc has started the sandbox.
//
// All of it runs at every start, not only when the sandbox is created.

var _ vmdriver.VolumeAdvisor = (*Driver)(nil)

// VolumeWarnings implements vmdriver.VolumeAdvisor: every sandbox's files
// belong to one host uid range, so what a sandbox writes into a read-write
// volume other host users can enter (a set-uid program of that uid, say) is
// theirs to run. Volumes that would reach msbd's state, or whose path holds
// a link, are refused by Create and Start; these are only warned about.
func (d *Driver) VolumeWarnings(spec vmdriver.Spec) []string {
	var out []string
	for _, m := range spec.Mounts {
		if m.ReadOnly {
			continue
		}
		h, err := openHostPath(m.HostPath)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(h.Leaf, &st)
		h.Close()
		if err != nil || st.Mode&0o001 == 0 {
			continue
		}
		out = append(out, fmt.Sprintf(
			"volume %s: other host users can enter %s (mode %#o); files the sandbox writes there, set-uid programs included, are theirs to use: put it inside a root-owned directory of mode 0710 and the sandbox's own group (the gid of its ids.json), or mount it readOnly",
			m.Path, m.HostPath, st.Mode&0o777))
	}
	return out
}

// volumesDir holds the staging mounts of a sandbox's volumes.
func (d *Driver) volumesDir(id string) string { return filepath.Join(d.SandboxDir(id), "volumes") }

// volumeStage is where volume i of sandbox id is staged for runc.
func (d *Driver) volumeStage(id string, i int) string {
	return filepath.Join(d.volumesDir(id), strconv.Itoa(i))
}

// checkVolumeSources opens every volume's host path as stageVolumes will and
// refuses what it would refuse, so a bad volume fails Create (and the
// apply's sandbox says why) before anything is made for it.
func (d *Driver) checkVolumeSources(spec vmdriver.Spec) error {
	if len(spec.Mounts) == 0 {
		return nil
	}
	g, err := d.newVolumeGuard()
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	defer g.Close()
	for i, m := range spec.Mounts {
		h, err := openHostPath(m.HostPath)
		if err != nil {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
		err = g.check(h)
		h.Close()
		if err != nil {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
	}
	return nil
}

// stageVolumes opens, checks and stages every volume of spec for runc (see
// the top of this file). release unmounts the staging mounts: call it once
// runc has made the sandbox's own mounts.
func (d *Driver) stageVolumes(spec vmdriver.Spec) (release func(), err error) {
	nothing := func() {}
	dir := d.volumesDir(spec.ID)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if len(spec.Mounts) == 0 {
			return nothing, nil // never staged: no mountinfo to read
		}
	} else if err := unmountAll(dir); err != nil {
		// What a start msbd did not finish left mounted.
		return nothing, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if len(spec.Mounts) == 0 {
		return nothing, nil
	}
	if err := sandboxDirPerms(dir, d.sandboxGID(spec.ID)); err != nil {
		return nothing, err
	}
	g, err := d.newVolumeGuard()
	if err != nil {
		return nothing, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	defer g.Close()
	var staged []string
	release = func() {
		for _, p := range staged {
			unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
	}
	for i, m := range spec.Mounts {
		target := d.volumeStage(spec.ID, i)
		if err := stageVolume(g, m, target); err != nil {
			release()
			return nothing, fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
		staged = append(staged, target)
	}
	return release, nil
}

// bundleStagesVolumes reports whether the bundle runc starts from mounts
// the volumes from their staging paths; a bundle an older msbd wrote named
// the host paths themselves (for runc to follow links in) and is rewritten.
func (d *Driver) bundleStagesVolumes(spec vmdriver.Spec) bool {
	if len(spec.Mounts) == 0 {
		return true
	}
	b, err := os.ReadFile(filepath.Join(d.bundleDir(spec.ID), "config.json"))
	if err != nil {
		return false
	}
	var cfg struct {
		Mounts []struct {
			Source string `json:"source"`
		} `json:"mounts"`
	}
	if json.Unmarshal(b, &cfg) != nil {
		return false
	}
	staged := map[string]bool{}
	for _, m := range cfg.Mounts {
		staged[m.Source] = true
	}
	for i := range spec.Mounts {
		if !staged[d.volumeStage(spec.ID, i)] {
			return false
		}
	}
	return true
}

func stageVolume(g *volumeGuard, m vmdriver.Mount, target string) error {
	tree, isDir, err := openVolumeTree(g, m)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	// The mount target matches the source: a directory or a file.
	os.RemoveAll(target) // an empty leftover at most: staging is unmounted above
	if isDir {
		err = os.Mkdir(target, 0o700)
	} else {
		err = os.WriteFile(target, nil, 0o600)
	}
	if err != nil {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("%s: move_mount to %s: %w", m.HostPath, target, err)
	}
	return nil
}

// openVolumeTree opens m's host path without following links, checks it
// with g and returns a detached mount of it (nosuid, nodev, and read-only
// as m says) for the caller to attach, and whether it is a directory.
func openVolumeTree(g *volumeGuard, m vmdriver.Mount) (tree int, isDir bool, err error) {
	h, err := openHostPath(m.HostPath)
	if err != nil {
		return -1, false, err
	}
	defer h.Close()
	if err := g.check(h); err != nil {
		return -1, false, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(h.Leaf, &st); err != nil {
		return -1, false, err
	}
	// A clone of the opened directory only, without what is mounted below
	// it (no AT_RECURSIVE): what is visible is the one filesystem tree the
	// guard checked.
	tree, err = unix.OpenTree(h.Leaf, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, false, fmt.Errorf("%s: open_tree: %w", m.HostPath, err)
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if m.ReadOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	// Private: a mount the host makes below the volume's path after the
	// check must not propagate into the sandbox's view of it.
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: attr, Propagation: unix.MS_PRIVATE}); err != nil {
		unix.Close(tree)
		return -1, false, fmt.Errorf("%s: mount_setattr: %w", m.HostPath, err)
	}
	return tree, st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// fileID is a file's identity.
type fileID struct{ dev, ino uint64 }

func fdFileID(fd int) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// ancestorIDs are the identities of directory fd and of every directory
// above it, up to the root, found through ".." (never a name): at a mount's
// root ".." leads to the directory it is mounted on.
func ancestorIDs(fd int) ([]fileID, error) {
	cur, err := unix.Openat(fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() { unix.Close(cur) }()
	var out []fileID
	for range 4096 {
		id, err := fdFileID(cur)
		if err != nil {
			return nil, err
		}
		if len(out) > 0 && out[len(out)-1] == id {
			return out, nil // ".." of the root is the root
		}
		out = append(out, id)
		up, err := unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		unix.Close(cur)
		cur = up
	}
	return nil, errors.New("more than 4096 directories above a host path")
}

// fsPlace is where a file lies within its filesystem: the device of the
// filesystem (as mountinfo shows it) and the path from that filesystem's
// root. Two mounts of one filesystem (a bind mount) show the same places.
type fsPlace struct {
	dev  string
	path string
}

type mountEntry struct {
	dev, root, point string
}

// volumeGuard knows msbd's state directory by identity, at one moment.
type volumeGuard struct {
	state      int      // O_PATH descriptor of the state directory
	stateDir   string   // its path as the kernel gives it
	stateAbove []fileID // the state directory and every directory above it
	mounts     map[uint64]mountEntry
	forbidden  []fsPlace // the state directory, and what is mounted below it
}

func (d *Driver) newVolumeGuard() (*volumeGuard, error) {
	fd, err := unix.Open(d.opts.StateDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	g := &volumeGuard{state: fd}
	if g.stateAbove, err = ancestorIDs(fd); err != nil {
		g.Close()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if g.stateDir, err = fdPath(fd); err != nil {
		g.Close()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if g.mounts, err = readMountinfo(); err != nil {
		g.Close()
		return nil, err
	}
	p, err := g.place(fd)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	g.forbidden = append(g.forbidden, p)
	staging := filepath.Join(g.stateDir, "sandboxes", "*", "volumes", "*")
	for _, m := range g.mounts {
		if !within(m.point, g.stateDir) || !strings.HasPrefix(m.root, "/") {
			continue // elsewhere, or not a tree (an nsfs file)
		}
		if ok, _ := filepath.Match(staging, m.point); ok {
			continue // other sandboxes' volumes, staged for a moment
		}
		g.forbidden = append(g.forbidden, fsPlace{m.dev, m.root})
	}
	return g, nil
}

func (g *volumeGuard) Close() { unix.Close(g.state) }

// check refuses h when it is, holds or lies inside the state directory, or
// lies in or holds the tree of anything mounted below it.
func (g *volumeGuard) check(h *hostPathFD) error {
	refuse := func() error {
		return refusedVolume{fmt.Sprintf("%s would give the sandbox msbd's state directory %s (other sandboxes' files) or part of it; mount a directory outside it", h.Path, g.stateDir)}
	}
	leaf, err := fdFileID(h.Leaf)
	if err != nil {
		return err
	}
	// Inside (or a bind mount of) the state directory: it is among the
	// opened path's ancestors. The leaf itself counts; a file's ancestors
	// start at the directory that holds it.
	if leaf == g.stateAbove[0] {
		return refuse()
	}
	above, err := ancestorIDs(h.Parent)
	if err != nil {
		return err
	}
	for _, id := range above {
		if id == g.stateAbove[0] {
			return refuse()
		}
	}
	// Holding it: the opened path is among the state directory's ancestors.
	for _, id := range g.stateAbove {
		if id == leaf {
			return refuse()
		}
	}
	// By filesystem: a bind mount of a directory below the state directory
	// (or of an image layer, a sandbox's root) mounted elsewhere shares no
	// inode with the ancestors above, but shows the same place.
	p, err := g.place(h.Leaf)
	if err != nil {
		return err
	}
	for _, f := range g.forbidden {
		if p.dev == f.dev && (within(p.path, f.path) || within(f.path, p.path)) {
			return refuse()
		}
	}
	return nil
}

// place is where the file of fd lies in its filesystem: its mount's root
// within the filesystem, joined with its path below the mount point.
func (g *volumeGuard) place(fd int) (fsPlace, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return fsPlace{}, fmt.Errorf("statx: %w", err)
	}
	m, ok := g.mounts[stx.Mnt_id]
	if !ok {
		// Mounted after mountinfo was read: read it again.
		mounts, err := readMountinfo()
		if err != nil {
			return fsPlace{}, err
		}
		g.mounts = mounts
		if m, ok = mounts[stx.Mnt_id]; !ok {
			return fsPlace{}, fmt.Errorf("mount %d is not in this mount namespace", stx.Mnt_id)
		}
	}
	p, err := fdPath(fd)
	if err != nil {
		return fsPlace{}, err
	}
	if !within(p, m.point) {
		return fsPlace{}, fmt.Errorf("%s is not below its mount point %s", p, m.point)
	}
	rel, _ := filepath.Rel(m.point, p)
	return fsPlace{dev: m.dev, path: filepath.Join(m.root, rel)}, nil
}

// fdPath is the path the kernel gives the file of fd in this mount namespace.
func fdPath(fd int) (string, error) {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(p) || strings.HasSuffix(p, " (deleted)") {
		return "", fmt.Errorf("%s: removed or unreachable from this mount namespace", p)
	}
	return p, nil
}

// readMountinfo maps mount IDs to their device, root and mount point.
func readMountinfo() (map[uint64]mountEntry, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint64]mountEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		id, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		out[id] = mountEntry{dev: fields[2], root: unescapeMountinfo(fields[3]), point: unescapeMountinfo(fields[4])}
	}
	return out, sc.Err()
}

// refusedVolume is a refusal that says only its message and is
// vmdriver.ErrVolumeRefused to errors.Is.
type refusedVolume struct{ msg string }

func (e refusedVolume) Error() string { return e.msg }
func (e refusedVolume) Unwrap() error { return vmdriver.ErrVolumeRefused }
