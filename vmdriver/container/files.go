package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"msb.dev/msb/vmdriver"
)

// Placed files (Spec.Files). Each is written to sandboxes/<id>/files/<n> and
// bind-mounted read-only at its path, over whatever the image has there
// (hidden, not changed). The host copies belong to host root, which has no
// id in the sandbox's user namespace: the sandbox sees them owned by the
// overflow ids (nobody) with the spec's mode, reads them through the
// "others" bits (0644 by default) and could not change them even if the
// read-only mount were undone. files/ is root:HostGID 0710 like the sandbox
// directory, because runc makes the bind mounts as the sandbox's root.
//
// They are rewritten from the saved spec whenever the bundle is (Create, and
// Start after a Delete without purge), so a change of the spec's files takes
// effect at the next run.

const defaultFileMode = 0o644

func (d *Driver) filesDir(id string) string { return filepath.Join(d.SandboxDir(id), "files") }

// placeFiles writes spec.Files anew under filesDir, dropping the copies of
// an earlier spec.
func (d *Driver) placeFiles(spec vmdriver.Spec) error {
	dir := d.filesDir(spec.ID)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if len(spec.Files) == 0 {
		return nil
	}
	if err := sandboxDirPerms(dir, d.sandboxGID(spec.ID)); err != nil {
		return err
	}
	for i, f := range spec.Files {
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = defaultFileMode
		}
		if err := writeFileAtomic(filepath.Join(dir, strconv.Itoa(i)), f.Data, mode); err != nil {
			return fmt.Errorf("files[%d] (%s): %w", i, f.Path, err)
		}
	}
	return nil
}

// fileMounts are the bind mounts of the placed files. A file without any
// execute bit is mounted noexec.
func (d *Driver) fileMounts(spec vmdriver.Spec) []specs.Mount {
	var m []specs.Mount
	for i, f := range spec.Files {
		opts := []string{"bind", "ro", "nosuid", "nodev"}
		if f.Mode&0o111 == 0 {
			opts = append(opts, "noexec")
		}
		m = append(m, specs.Mount{
			Destination: f.Path,
			Type:        "bind",
			Source:      filepath.Join(d.filesDir(spec.ID), strconv.Itoa(i)),
			Options:     opts,
		})
	}
	return m
}
