package container

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// cgroupMounts returns the mount points of every cgroup hierarchy (v1
// controllers, the v1 hybrid unified mount, or the v2 root).
//
// They are read once and kept (hierarchies are mounted at boot): reading
// the mount table, which grows with every sandbox, at every delete made
// deleting N sandboxes read N tables of N sandboxes' mounts.
func cgroupMounts() ([]string, error) {
	cgroupMountsMu.Lock()
	defer cgroupMountsMu.Unlock()
	if cgroupMountsKept != nil {
		return cgroupMountsKept, nil
	}
	b, err := mountinfo.read()
	if err != nil {
		return nil, err
	}
	mps := parseCgroupMounts(b)
	if len(mps) > 0 {
		cgroupMountsKept = mps
	}
	return mps, nil
}

var (
	cgroupMountsMu   sync.Mutex
	cgroupMountsKept []string
)

func parseCgroupMounts(b []byte) []string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		// ... mountpoint ... - fstype source options
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, post2 := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(post2) < 1 {
			continue
		}
		if post2[0] == "cgroup" || post2[0] == "cgroup2" {
			out = append(out, unescapeMountinfo(fields[4]))
		}
	}
	return out
}

// cgroupDirs are the directories of id's cgroup in every hierarchy that has one.
func (d *Driver) cgroupDirs(id string) []string {
	mps, err := cgroupMounts()
	if err != nil {
		return nil
	}
	var dirs []string
	for _, mp := range mps {
		dir := filepath.Join(mp, d.cgroupsPath(id))
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// cgroupProcs counts the processes left in id's cgroups and their children
// (the workload's).
func (d *Driver) cgroupProcs(id string) int {
	n := 0
	for _, dir := range d.cgroupDirs(id) {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				n += bytes.Count(b, []byte("\n"))
			}
			return nil
		})
	}
	return n
}

// removeCgroups removes id's cgroup directories (children first) that runc
// left behind. cgroupfs only allows rmdir, and only of an empty cgroup; a
// cgroup whose last process is still exiting is busy for a moment.
func (d *Driver) removeCgroups(id string) error {
	for _, dir := range d.cgroupDirs(id) {
		if err := removeCgroupDirs(dir, true); err != nil {
			return err
		}
	}
	return nil
}
