package container

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
	"msb.dev/msb/vmdriver"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validID(id string) error {
	if !idPattern.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("sandbox id %q: want 1-128 of [A-Za-z0-9_.-], starting with a letter or digit", id)
	}
	return nil
}

// reservedPaths are where neither a volume nor a placed file may go: the
// agent's directory and the kernel's filesystems runc mounts.
var reservedPaths = []string{agentMountDir, "/proc", "/sys", "/dev"}

// validateSpec checks spec before anything is made for it. Paths inside
// the sandbox are only checked lexically here; runc resolves each mount
// target inside the rootfs (symlinks in the image included) and refuses
// targets that end up in /proc.
func validateSpec(spec vmdriver.Spec) error {
	if err := validID(spec.ID); err != nil {
		return err
	}
	if len(spec.Layers) == 0 {
		return fmt.Errorf("sandbox %s: no image layers", spec.ID)
	}
	for _, l := range spec.Layers {
		if !filepath.IsAbs(l) {
			return fmt.Errorf("sandbox %s: layer %q is not an absolute path", spec.ID, l)
		}
	}
	if !filepath.IsAbs(spec.AgentPath) {
		return fmt.Errorf("sandbox %s: agent path %q is not an absolute path", spec.ID, spec.AgentPath)
	}
	if fi, err := os.Stat(spec.AgentPath); err != nil {
		return fmt.Errorf("sandbox %s: agent binary: %w", spec.ID, err)
	} else if !fi.Mode().IsRegular() || fi.Mode()&0o001 == 0 {
		return fmt.Errorf("sandbox %s: agent binary %s must be a regular file executable by others (mode o+x)", spec.ID, spec.AgentPath)
	}
	if len(spec.Args) == 0 {
		return fmt.Errorf("sandbox %s: no command to run (args is empty)", spec.ID)
	}
	for i, m := range spec.Mounts {
		p := filepath.Clean(m.Path)
		if !filepath.IsAbs(m.Path) || p == "/" {
			return fmt.Errorf("sandbox %s: mounts[%d].path %q must be an absolute path other than /", spec.ID, i, m.Path)
		}
		for _, reserved := range reservedPaths {
			if within(p, reserved) {
				return fmt.Errorf("sandbox %s: mounts[%d].path %q is reserved (%s)", spec.ID, i, m.Path, reserved)
			}
		}
		if !filepath.IsAbs(m.HostPath) {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath %q is not an absolute path", spec.ID, i, m.HostPath)
		}
		if _, err := os.Stat(m.HostPath); err != nil {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
	}
	if err := validateFiles(spec); err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	// The network namespace need only exist by Start (which checks it):
	// its creator may make it while the sandbox is prepared.
	if spec.NetNSPath != "" && !filepath.IsAbs(spec.NetNSPath) {
		return fmt.Errorf("sandbox %s: network namespace %q is not an absolute path", spec.ID, spec.NetNSPath)
	}
	// spec.Ports are not checked: this driver publishes nothing (the
	// network policy layer forwards them into the namespace).
	return nil
}

// validateFiles checks where spec.Files go. The image is the sandbox
// author's and may be hostile, so a path must be absolute and clean (no ".."
// and nothing for runc to normalise), outside the reserved paths, given only
// once, and neither at, inside nor around a volume: runc would create the
// file's mount target in the host directory of the volume.
func validateFiles(spec vmdriver.Spec) error {
	seen := map[string]bool{}
	for i, f := range spec.Files {
		p := f.Path
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return fmt.Errorf("files[%d].path %q must be a clean absolute path of a file (no .., no trailing /)", i, p)
		}
		for _, reserved := range reservedPaths {
			if within(p, reserved) {
				return fmt.Errorf("files[%d].path %q is reserved (%s)", i, p, reserved)
			}
		}
		if seen[p] {
			return fmt.Errorf("files[%d].path %q is given twice", i, p)
		}
		seen[p] = true
		for j, m := range spec.Mounts {
			if mp := filepath.Clean(m.Path); within(p, mp) || within(mp, p) {
				return fmt.Errorf("files[%d].path %q overlaps mounts[%d].path %q", i, p, j, m.Path)
			}
		}
		if f.Mode&^os.ModePerm != 0 {
			return fmt.Errorf("files[%d].mode %v: only permission bits are allowed", i, f.Mode)
		}
	}
	return nil
}

// checkNetNS makes sure path is a network namespace the sandbox can join:
// an absolute path to an nsfs file (what `ip netns add` or a bind mount of
// /proc/<pid>/ns/net leaves) of type network. runc would take any file and
// fail later with less to go on.
func checkNetNS(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("network namespace %q is not an absolute path", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer f.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("network namespace %s is not a namespace file (nsfs): bind-mount one, as `ip netns add` does", path)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("network namespace %s: NS_GET_NSTYPE: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("network namespace %s is a namespace of another type (%#x)", path, typ)
	}
	return nil
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
