package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The workload cgroup on cgroup v2 (a host whose /sys/fs/cgroup is the
// unified hierarchy, such as Debian 12's default).
//
// v2's "no internal processes" rule (Documentation/admin-guide/cgroup-v2.rst)
// forbids enabling controllers for the children of a cgroup that has
// processes, so the v1 layout (the agent in the sandbox's cgroup, the
// workload a child of it) cannot be had. Instead the sandbox's cgroup
// holds no process and has two children:
//
//	<sandbox>            memory.max, memory.swap.max, pids.max, cpu.max: the
//	│                    sandbox's limits plus the agent's reserve (made by msbd)
//	├── agent            runc's cgroup (the bundle's cgroupsPath): the agent
//	└── workload         the sandbox's own limits: every command the agent starts
//
// The agent cannot move a process into workload through the cgroup
// filesystem it sees: its cgroup namespace is rooted at <sandbox>/agent and
// workload lies outside it. It writes to a cgroup.procs descriptor that
// msbd opened instead: since Linux 5.16 a write to cgroup.procs is checked
// with the credentials and the cgroup namespace of the opener (commits
// "cgroup: Use open-time credentials for process migraton perm checks" and
// "cgroup: Use open-time cgroup namespace for process migration perm
// checks"), here host root in the host's namespace. Older kernels check
// the writer's namespace and refuse, so there the sandbox keeps one cgroup
// as before.
//
// runc's device filter (an eBPF program on its cgroup) covers the agent's
// leaf only. The workload reaches no other device anyway: every mount it
// sees is nodev (rootfs, volumes, files) or was made in its user namespace
// (/dev, which the kernel makes nodev), apart from the device nodes runc
// binds from the host, which are the filter's allow list.

// agentCgroup names the child of a sandbox's v2 cgroup that runc puts the
// agent in.
const agentCgroup = "agent"

// cgroupV2Root is where a unified-mode host mounts the v2 hierarchy.
var cgroupV2Root = "/sys/fs/cgroup" // a variable for tests on a hybrid host's unified mount

var (
	cgroupModeOnce sync.Once
	cgroupUnified  bool
	cgroupV2Why    string // why the v2 workload cgroup is not used; "" when it is
)

// unifiedCgroups reports whether /sys/fs/cgroup is the cgroup v2 hierarchy
// (statfs magic, as runc decides), and why a v2 workload cgroup cannot be
// made here ("" when it can).
func unifiedCgroups() (unified bool, why string) {
	cgroupModeOnce.Do(func() {
		var st unix.Statfs_t
		if err := unix.Statfs(cgroupV2Root, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			return
		}
		cgroupUnified = true
		cgroupV2Why = v2WorkloadUnsupported(cgroupV2Root)
	})
	return cgroupUnified, cgroupV2Why
}

// v2WorkloadUnsupported says why the v2 hierarchy at root cannot hold a
// workload cgroup: a kernel before 5.16, or no memory or pids controller.
func v2WorkloadUnsupported(root string) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err.Error()
	}
	if !kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 16) {
		return "Linux before 5.16 checks a cgroup.procs write against the writer's cgroup namespace, so the agent could not move commands into the workload cgroup"
	}
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return err.Error()
	}
	have := strings.Fields(string(b))
	for _, c := range workloadControllers {
		if !slices.Contains(have, c) {
			return "the cgroup v2 hierarchy has no " + c + " controller"
		}
	}
	return ""
}

// kernelAtLeast compares a uname release ("6.1.0-18-amd64") with major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	f := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(f[0])
	mi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// v2Limits are what msbd writes into a sandbox's v2 cgroup: the bundle's
// resources (which already carry the agent's reserve, see
// withWorkloadCgroup) for <sandbox>, and the same less the reserve for
// workload.
type v2Limits struct {
	sandbox, workload [][2]string // file, value
}

// v2LimitsOf derives the v2 files from the bundle's resources. Swap
// follows runc's conversion: v1's memory+swap limit less the memory limit
// is v2's swap-only memory.swap.max.
func v2LimitsOf(r *specs.LinuxResources) v2Limits {
	var l v2Limits
	if r == nil {
		return l
	}
	if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		l.sandbox = append(l.sandbox, [2]string{"memory.max", strconv.FormatInt(*m.Limit, 10)})
		l.workload = append(l.workload, [2]string{"memory.max", strconv.FormatInt(max(*m.Limit-agentMemoryReserve, 1), 10)})
		if m.Swap != nil {
			swap := "max"
			if *m.Swap >= 0 {
				swap = strconv.FormatInt(max(*m.Swap-*m.Limit, 0), 10)
			}
			l.sandbox = append(l.sandbox, [2]string{"memory.swap.max", swap})
			l.workload = append(l.workload, [2]string{"memory.swap.max", swap})
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit > 0 {
		l.sandbox = append(l.sandbox, [2]string{"pids.max", strconv.FormatInt(*p.Limit, 10)})
		if *p.Limit > agentPIDsReserve {
			l.workload = append(l.workload, [2]string{"pids.max", strconv.FormatInt(*p.Limit-agentPIDsReserve, 10)})
		}
	}
	// runc sets cpu.max on its own cgroup, the agent's leaf: the bound of
	// the whole sandbox goes on the parent.
	if c := r.CPU; c != nil && c.Quota != nil && *c.Quota > 0 {
		period := uint64(cpuPeriod)
		if c.Period != nil && *c.Period > 0 {
			period = *c.Period
		}
		l.sandbox = append(l.sandbox, [2]string{"cpu.max", fmt.Sprintf("%d %d", *c.Quota, period)})
	}
	return l
}

// makeV2Cgroups makes the sandbox cgroup rel (like "/msb-…-id") under the
// v2 hierarchy at root afresh — so memory.events counts this run only —
// with its workload child and limits, enables the controllers on the way
// down as runc does, and opens workload's cgroup.procs for the agent. On
// failure it leaves nothing behind.
func makeV2Cgroups(root, rel string, l v2Limits) (f *os.File, err error) {
	sb := filepath.Join(root, rel)
	if err := removeCgroupTree(sb); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			removeCgroupTree(sb)
			err = fmt.Errorf("cgroup v2 workload cgroup: %w", err)
		}
	}()
	// Every cgroup from the root down to the sandbox's passes the
	// controllers on, as runc's CreateCgroupPath does for its own path
	// (runc would enable all; the limits need these).
	dir := root
	for _, e := range strings.Split(strings.Trim(rel, "/"), "/") {
		enableControllers(dir)
		dir = filepath.Join(dir, e)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
	}
	enableControllers(sb)
	if err := writeCgroupFiles(sb, l.sandbox); err != nil {
		return nil, err
	}
	wl := filepath.Join(sb, workloadCgroup)
	if err := os.Mkdir(wl, 0o755); err != nil {
		return nil, err
	}
	if err := writeCgroupFiles(wl, l.workload); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(wl, "cgroup.procs"), os.O_WRONLY, 0)
}

// v2Controllers are the controllers the sandbox's limits need below the
// root; runc enables the rest itself when it makes the agent's leaf.
var v2Controllers = []string{"cpu", "memory", "pids"}

// enableControllers enables in dir's children those of v2Controllers that
// dir has, one by one so that one the kernel refuses does not keep the
// others out; writeCgroupFiles then reports a limit that has no file.
func enableControllers(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return
	}
	for _, c := range strings.Fields(string(b)) {
		if slices.Contains(v2Controllers, c) {
			writeCgroupFile(dir, "cgroup.subtree_control", "+"+c)
		}
	}
}

// writeCgroupFiles writes each limit; a limit whose file is missing is an
// error naming its controller, except swap where the kernel accounts none.
func writeCgroupFiles(dir string, files [][2]string) error {
	for _, w := range files {
		err := writeCgroupFile(dir, w[0], w[1])
		if errors.Is(err, fs.ErrNotExist) {
			if w[0] == "memory.swap.max" {
				continue // no swap accounting: there is no swap to limit
			}
			ctl, _, _ := strings.Cut(w[0], ".")
			return fmt.Errorf("%s: the %s controller is not enabled here (%s missing)", dir, ctl, w[0])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeCgroupFile writes an existing cgroup file (cgroupfs files cannot
// be created).
func writeCgroupFile(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s to %s: %w", value, filepath.Join(dir, name), err)
	}
	return nil
}

// removeCgroupTree removes the cgroup dir and its descendants, children
// first; a missing one is fine, one with processes is an error (EBUSY).
func removeCgroupTree(dir string) error { return removeCgroupDirs(dir, false) }

// removeCgroupDirs removes the cgroup dir and its descendants, children
// first; with waitBusy it retries one still busy (its last processes being
// reaped) for up to two seconds.
func removeCgroupDirs(dir string, waitBusy bool) error {
	var sub []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			sub = append(sub, p)
		}
		return nil
	})
	slices.Reverse(sub)
	for _, p := range sub {
		err := unix.Rmdir(p)
		for i := 0; waitBusy && errors.Is(err, unix.EBUSY) && i < 100; i++ {
			time.Sleep(20 * time.Millisecond)
			err = unix.Rmdir(p)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", p, err)
		}
	}
	return nil
}
