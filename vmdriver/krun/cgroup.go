package krun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/container"
)

// Each runner gets a cgroup of its own in every hierarchy (named like the
// container driver's cgroups), made before it starts and joined before it
// reads its config, so everything it and libkrun do runs there. The limits
// bound the VMM: the guest's RAM plus vmmOverheadMiB, the spec's pids plus
// vmmPids for its own threads, and CPU time for the vCPUs asked for. cpuset
// is left alone (a new v1 cpuset has no CPUs until set).
const (
	vmmOverheadMiB = 256
	vmmPids        = 64
)

// cgroupDirs are id's cgroup directories, one per hierarchy (existing or not).
func (d *Driver) cgroupDirs(id string) []string {
	mps, err := container.CgroupMounts()
	if err != nil {
		return nil
	}
	var out []string
	for _, mp := range mps {
		if filepath.Base(mp) == "cpuset" || strings.Contains(filepath.Base(mp), "cpuset,") {
			continue
		}
		out = append(out, filepath.Join(mp, d.cgPrefix+id))
	}
	return out
}

func (d *Driver) setupCgroup(id string, spec vmdriver.Spec, cfg RunnerConfig) error {
	dirs := d.cgroupDirs(id)
	if len(dirs) == 0 {
		return errors.New("no cgroup hierarchy is mounted")
	}
	mem := strconv.FormatUint(uint64(cfg.RAMMiB+vmmOverheadMiB)<<20, 10)
	limits := map[string]string{"memory.max": mem, "memory.swap.max": "0", "memory.limit_in_bytes": mem}
	if spec.PIDs > 0 {
		limits["pids.max"] = strconv.FormatInt(spec.PIDs+vmmPids, 10)
	}
	if spec.MilliCPUs > 0 {
		limits["cpu.max"] = fmt.Sprintf("%d 100000", spec.MilliCPUs*100)
		limits["cpu.cfs_period_us"] = "100000"
		limits["cpu.cfs_quota_us"] = strconv.FormatInt(spec.MilliCPUs*100, 10)
	}
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		for _, name := range []string{"cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.max", "memory.limit_in_bytes", "memory.max", "memory.swap.max", "pids.max"} {
			v, ok := limits[name]
			if !ok {
				continue
			}
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err != nil {
				continue // not this hierarchy's, or the controller is off
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %w", p, err)
			}
		}
	}
	return nil
}

// joinCgroup moves pid (the whole process) into id's cgroups.
func (d *Driver) joinCgroup(id string, pid int) error {
	for _, dir := range d.cgroupDirs(id) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
	}
	return nil
}

func (d *Driver) cgroupPids(id string) []int {
	seen := map[int]bool{}
	var out []int
	for _, dir := range d.cgroupDirs(id) {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// killCgroup kills every process in id's cgroups (cgroup.kill where the
// kernel has it).
func (d *Driver) killCgroup(id string) {
	for _, dir := range d.cgroupDirs(id) {
		os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
	}
	for _, pid := range d.cgroupPids(id) {
		unix.Kill(pid, unix.SIGKILL)
	}
}

func (d *Driver) waitCgroupEmpty(id string, timeout time.Duration) error {
	for end := time.Now().Add(timeout); len(d.cgroupPids(id)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			return fmt.Errorf("the cgroups of sandbox %s still hold processes %s after SIGKILL", id, timeout)
		}
		d.killCgroup(id)
	}
	return nil
}

func (d *Driver) removeCgroup(id string) error {
	for _, dir := range d.cgroupDirs(id) {
		for i := 0; ; i++ {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || i >= 100 {
				return fmt.Errorf("remove cgroup %s: %w", dir, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}
