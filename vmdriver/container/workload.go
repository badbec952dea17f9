package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The workload's child cgroup. runc puts the agent (PID 1) in the sandbox's
// cgroup with the sandbox's limits plus a reserve; the host makes a
// "workload" child of it in the memory and pids hierarchies with the
// sandbox's own limits, and hands the agent its cgroup.procs files: every
// process the agent starts (main command, exec, copy helpers) runs there.
// A fork bomb or a memory hog then fills the workload's limits and leaves
// the reserve to the agent, which keeps serving exec and the host.
//
// On cgroup v1 this uses the memory and pids hierarchies. On cgroup v2 a
// cgroup with processes cannot hand controllers to children, so there the
// agent and the workload are siblings under the sandbox's cgroup instead
// (see cgroupv2.go). Where neither works the sandbox keeps one cgroup.
const (
	agentMemoryReserve = 64 << 20
	agentPIDsReserve   = 64
)

// workloadControllers are the v1 controllers the workload cgroup is made in.
var workloadControllers = []string{"memory", "pids"}

var (
	workloadMountsOnce sync.Once
	workloadMountsList []string
)

// workloadMounts are the mount points of the v1 hierarchies of
// workloadControllers, in that order; nil where they are not all v1.
func workloadMounts() []string {
	workloadMountsOnce.Do(func() {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		found := map[string]string{}
		for line := range strings.SplitSeq(string(b), "\n") {
			pre, post, ok := strings.Cut(line, " - ")
			if !ok {
				continue
			}
			fields, post2 := strings.Fields(pre), strings.Fields(post)
			if len(fields) < 5 || len(post2) < 3 || post2[0] != "cgroup" {
				continue
			}
			for _, o := range strings.Split(post2[2], ",") {
				if slices.Contains(workloadControllers, o) {
					if _, dup := found[o]; !dup {
						found[o] = unescapeMountinfo(fields[4])
					}
				}
			}
		}
		var out []string
		for _, c := range workloadControllers {
			if found[c] == "" {
				return
			}
			out = append(out, found[c])
		}
		workloadMountsList = out
	})
	return workloadMountsList
}

// withWorkloadCgroup gives the agent the workload cgroup's descriptors
// (numbered from first) and raises the sandbox cgroup's limits by the
// agent's reserve; the workload cgroup gets the sandbox's own. On cgroup
// v2, runc's cgroup becomes the agent's leaf under the sandbox's.
func withWorkloadCgroup(s *specs.Spec, first int) {
	n := len(workloadMounts())
	if unified, why := unifiedCgroups(); unified {
		if why != "" {
			return
		}
		n = 1
		s.Linux.CgroupsPath += "/" + agentCgroup
	}
	if n == 0 {
		return
	}
	fds := make([]string, n)
	for i := range fds {
		fds[i] = strconv.Itoa(first + i)
	}
	s.Process.Args = append(s.Process.Args, "--workload-cgroup-fds", strings.Join(fds, ","))
	r := s.Linux.Resources
	if r.Memory != nil && r.Memory.Limit != nil {
		limit := *r.Memory.Limit + agentMemoryReserve
		r.Memory.Limit = &limit
		if r.Memory.Swap != nil {
			swap := *r.Memory.Swap + agentMemoryReserve
			r.Memory.Swap = &swap
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
		pids := *r.Pids.Limit + agentPIDsReserve
		r.Pids.Limit = &pids
	}
}

// readBundle reads id's runtime spec as Create wrote it.
func (d *Driver) readBundle(id string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(d.bundleDir(id), "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Process == nil || s.Linux == nil {
		return nil, fmt.Errorf("%s: no process or linux section", d.bundleDir(id))
	}
	return &s, nil
}

// workloadCgroupFiles makes id's workload cgroup afresh (so its OOM count
// is this run's) with the sandbox's limits, and opens its cgroup.procs
// files for the agent, in the order of --workload-cgroup-fds in id's
// bundle s (readBundle).
// A bundle without that flag (written by an older msbd) gets none.
func (d *Driver) workloadCgroupFiles(id string, s *specs.Spec) ([]*os.File, error) {
	if !slices.Contains(s.Process.Args, "--workload-cgroup-fds") {
		return nil, nil
	}
	unified, why := unifiedCgroups()
	if v2 := s.Linux.CgroupsPath == d.cgroupsPath(id)+"/"+agentCgroup; v2 || unified {
		switch {
		case !v2:
			return nil, errors.New("the bundle was written for cgroup v1 workload cgroups, but this host runs cgroup v2: delete and apply the sandbox again")
		case !unified:
			return nil, errors.New("the bundle was written for a cgroup v2 workload cgroup, but this host runs cgroup v1: delete and apply the sandbox again")
		case why != "":
			return nil, fmt.Errorf("the bundle wants a cgroup v2 workload cgroup, but %s", why)
		}
		f, err := makeV2Cgroups(cgroupV2Root, d.cgroupsPath(id), v2LimitsOf(s.Linux.Resources))
		if err != nil {
			return nil, err
		}
		return []*os.File{f}, nil
	}
	mounts := workloadMounts()
	if len(mounts) == 0 {
		return nil, errors.New("the bundle wants workload cgroups, but this host has no cgroup v1 memory and pids hierarchies")
	}
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("workload cgroup: %w", err)
	}
	r := s.Linux.Resources
	for i, mp := range mounts {
		dir := filepath.Join(mp, d.cgroupsPath(id), workloadCgroup)
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			return fail(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
		var writes [][2]string
		switch workloadControllers[i] {
		case "memory":
			if r != nil && r.Memory != nil && r.Memory.Limit != nil {
				limit := strconv.FormatInt(*r.Memory.Limit-agentMemoryReserve, 10)
				writes = append(writes, [2]string{"memory.limit_in_bytes", limit})
				if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
					writes = append(writes, [2]string{"memory.memsw.limit_in_bytes", limit})
				}
			}
		case "pids":
			if r != nil && r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > agentPIDsReserve {
				writes = append(writes, [2]string{"pids.max", strconv.FormatInt(*r.Pids.Limit-agentPIDsReserve, 10)})
			}
		}
		for _, w := range writes {
			if err := os.WriteFile(filepath.Join(dir, w[0]), []byte(w[1]), 0); err != nil {
				return fail(err)
			}
		}
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			return fail(err)
		}
		files = append(files, f)
	}
	return files, nil
}
