package container

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Permissions. A sandbox's files must be out of reach of every host user but
// root and the sandbox's own root (the host uid and gid of its range, see
// idalloc.go): its agent socket
// (host root access to the sandbox), its writable layer, and its mounted
// rootfs, where the image's setuid files keep their bits (see mountOverlay)
// and would be setuid-<mapped uid> programs for anyone who could reach them.
//
// runc bind-mounts the bundle rootfs from inside the user namespace, as the
// sandbox's root, which has no capability over host-owned files: it needs
// search permission on every directory down to sandboxes/<id>/rootfs. So:
//
//	StateDir/              owner kept, group HostGID, mode u=(kept),g=x,o=x (0711)
//	StateDir/sandboxes/    root:root 0711 (both 0710 group HostGID where
//	                       every sandbox shares the first range: container.Host)
//	StateDir/sandboxes/<id>/  root:<the sandbox's gid> 0710
//	StateDir/runc/         root 0700 (runc init gets its fifo as a descriptor)
//
// Every sandbox has a gid of its own, so the first two are searchable by
// all (never listable); each sandbox directory only by its own sandbox's
// group, which no host user and no other sandbox holds (CheckIDRange makes
// sure no host account or subordinate range overlaps the span). What else
// StateDir holds keeps its own modes (msb.db 0600, images/ 0700, …). The directories above
// StateDir belong to others; they must already be searchable (o+x) and New
// fails if one is not. The image layers (lower dirs) need no search
// permission at all: the overlay is mounted by host root and reads its lower
// dirs with the mounter's credentials.
const (
	stateDirSearchMode = 0o011 // added to the owner's bits of StateDir
	sandboxDirMode     = 0o710
)

// lockDown creates the driver's directories with the modes above, or brings
// those of an existing state dir (older versions made them 0711 and gave
// StateDir o+x) and of its sandboxes to them.
func (d *Driver) lockDown() error {
	state, sandboxes := d.opts.StateDir, filepath.Join(d.opts.StateDir, "sandboxes")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(state)
	if err != nil {
		return err
	}
	if err := os.Chown(state, -1, int(d.opts.HostGID)); err != nil {
		return err
	}
	// Where all sandboxes share one range (the microVM driver's Host), its
	// group alone need search StateDir and sandboxes/.
	searchMode, sbxGID, sbxMode := os.FileMode(stateDirSearchMode), 0, os.FileMode(0o711)
	if !d.ids.perSandbox() {
		searchMode, sbxGID, sbxMode = 0o010, int(d.opts.HostGID), 0o710
	}
	if err := os.Chmod(state, fi.Mode().Perm()&0o700|searchMode); err != nil {
		return err
	}
	if d.runcRoot != "" { // a Host has no runc
		if err := os.Mkdir(d.runcRoot, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := os.Chmod(d.runcRoot, 0o700); err != nil {
			return err
		}
	}
	if err := os.Mkdir(sandboxes, sbxMode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Lchown(sandboxes, 0, sbxGID); err != nil {
		return err
	}
	if err := os.Chmod(sandboxes, sbxMode); err != nil {
		return err
	}
	entries, err := os.ReadDir(sandboxes)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && validID(e.Name()) == nil {
			dir := filepath.Join(sandboxes, e.Name())
			gid := d.opts.HostGID
			if ids, ok, err := readIDs(dir); err == nil && ok {
				gid = ids.GID
			}
			if err := sandboxDirPerms(dir, gid); err != nil {
				return err
			}
		}
	}
	for dir := filepath.Dir(state); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !d.searchable(fi) {
			return fmt.Errorf("state dir %s: %s (mode %o) is not searchable by sandbox users: chmod o+x %s or choose another --state-dir", state, dir, fi.Mode().Perm(), dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// sandboxDirPerms makes dir (created if missing) root:gid 0710, gid the
// sandbox's root group.
func sandboxDirPerms(dir string, gid uint32) error {
	if err := os.Mkdir(dir, sandboxDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Lchown(dir, 0, int(gid)); err != nil {
		return err
	}
	return os.Chmod(dir, sandboxDirMode)
}

// searchable reports whether every sandbox's root (each its own host uid
// and gid, no supplementary groups; or, where all share one range, its
// first uid and gid) may search the directory fi.
func (d *Driver) searchable(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || d.ids.perSandbox() {
		return fi.Mode().Perm()&0o001 != 0
	}
	switch {
	case st.Uid == d.opts.HostUID:
		return st.Mode&0o100 != 0
	case st.Gid == d.opts.HostGID:
		return st.Mode&0o010 != 0
	}
	return st.Mode&0o001 != 0
}

func hash8(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:8]
}
