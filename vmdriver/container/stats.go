package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// Stats implements vmdriver.StatsReader from id's cgroups, v1 or v2: CPU time
// (cpuacct.usage, cpu.stat usage_usec), memory (memory.usage_in_bytes,
// memory.current), pids (pids.current) and their limits. A limit is the
// tightest of the sandbox's cgroup and its workload child.
func (d *Driver) Stats(id string) (v1alpha1.SandboxStats, error) {
	st := v1alpha1.SandboxStats{Time: time.Now().UTC()}
	if err := validID(id); err != nil {
		return st, err
	}
	dirs := d.cgroupDirs(id)
	if len(dirs) == 0 {
		return st, fmt.Errorf("sandbox %s has no cgroup: is it running?", id)
	}
	found := false
	for _, dir := range dirs {
		if v, ok := readUint(dir, "cpuacct.usage"); ok {
			st.CPUUsageNanos, found = v, true
		}
		if kv := readKeyed(dir, "cpu.stat"); kv["usage_usec"] != "" {
			if v, err := strconv.ParseUint(kv["usage_usec"], 10, 64); err == nil {
				st.CPUUsageNanos, found = v*1000, true
			}
		}
		for _, f := range []string{"memory.usage_in_bytes", "memory.current"} {
			if v, ok := readUint(dir, f); ok {
				st.MemoryBytes, found = v, true
			}
		}
		if v, ok := readUint(dir, "pids.current"); ok {
			st.PIDs, found = v, true
		}
		for _, sub := range []string{dir, filepath.Join(dir, workloadCgroup)} {
			for _, f := range []string{"memory.limit_in_bytes", "memory.max"} {
				if v, ok := readUint(sub, f); ok && v < 1<<62 {
					st.MemoryLimitBytes = tighter(st.MemoryLimitBytes, v)
				}
			}
			if v, ok := readUint(sub, "pids.max"); ok {
				st.PIDsLimit = tighter(st.PIDsLimit, v)
			}
			if m := cpuLimitMilli(sub); m > 0 && (st.CPULimitMilli == 0 || m < st.CPULimitMilli) {
				st.CPULimitMilli = m
			}
		}
	}
	if !found {
		return st, errors.New("no cgroup statistics found for sandbox " + id)
	}
	return st, nil
}

// tighter is the smaller of two limits, 0 being none.
func tighter(cur, v uint64) uint64 {
	if v == 0 || (cur != 0 && cur < v) {
		return cur
	}
	return v
}

// cpuLimitMilli reads a CFS quota: cpu.max "QUOTA PERIOD" (v2) or
// cpu.cfs_quota_us and cpu.cfs_period_us (v1); 0 when unlimited.
func cpuLimitMilli(dir string) int64 {
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseInt(f[0], 10, 64)
			p, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 == nil && err2 == nil && p > 0 && q > 0 {
				return q * 1000 / p
			}
		}
		return 0
	}
	q, ok1 := readInt(dir, "cpu.cfs_quota_us")
	p, ok2 := readInt(dir, "cpu.cfs_period_us")
	if ok1 && ok2 && q > 0 && p > 0 {
		return q * 1000 / p
	}
	return 0
}

func readUint(dir, name string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, true
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

func readInt(dir, name string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// readKeyed reads a "key value" per line file such as cpu.stat.
func readKeyed(dir, name string) map[string]string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
