package container

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
)

var _ vmdriver.OOMCounter = (*Driver)(nil)

// memoryCgroupRoot is the mount point of the hierarchy with the memory
// controller: cgroup v1's "memory" hierarchy, or the v2 root when v1 has none.
func memoryCgroupRoot() (root string, v2 bool, err error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	var unified string
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, post2 := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(post2) < 3 {
			continue
		}
		switch post2[0] {
		case "cgroup":
			for _, o := range strings.Split(post2[2], ",") {
				if o == "memory" {
					return unescapeMountinfo(fields[4]), false, nil
				}
			}
		case "cgroup2":
			if unified == "" {
				unified = unescapeMountinfo(fields[4])
			}
		}
	}
	if unified == "" {
		return "", false, fmt.Errorf("no memory cgroup hierarchy is mounted")
	}
	return unified, true, nil
}

// workloadMemoryCgroup is the memory cgroup directory whose OOM count
// tells of id's workload. On v1: the sandbox's cgroup, or its workload
// child where there is one. On v2: the sandbox's cgroup, whose
// memory.events counts the kills in its whole subtree (the workload and
// agent children of cgroupv2.go, or runc's one cgroup).
func (d *Driver) workloadMemoryCgroup(id string) (dir string, v2 bool, err error) {
	root, v2, err := memoryCgroupRoot()
	if err != nil {
		return "", false, err
	}
	dir = filepath.Join(root, d.cgroupsPath(id))
	if v2 {
		return dir, true, nil
	}
	if fi, err := os.Stat(filepath.Join(dir, workloadCgroup)); err == nil && fi.IsDir() {
		dir = filepath.Join(dir, workloadCgroup)
	}
	return dir, v2, nil
}

// workloadCgroup names the child cgroup of a sandbox's cgroup that holds its
// main command and execs, where the driver made one.
const workloadCgroup = "workload"

// OOMKills implements vmdriver.OOMCounter: the oom_kill count of id's
// workload memory cgroup (memory.events in v2, memory.oom_control in v1).
// A kill in the agent's leaf counts too on v2: the sandbox then ended by
// the memory limit all the same.
func (d *Driver) OOMKills(id string) (uint64, error) {
	if err := validID(id); err != nil {
		return 0, err
	}
	dir, v2, err := d.workloadMemoryCgroup(id)
	if err != nil {
		return 0, err
	}
	file := "memory.oom_control"
	if v2 {
		file = "memory.events"
	}
	return readOOMKill(filepath.Join(dir, file))
}

// readOOMKill reads the "oom_kill N" line of a memory cgroup file.
func readOOMKill(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "oom_kill" {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no oom_kill counter (kernel before 4.13?)", path)
}

// endedByOOM tells whether a stopped run was ended by the OOM killer: the
// agent reports its main command killed by SIGKILL (or the agent itself
// was killed and wrote nothing), and the workload's memory cgroup counted
// an OOM kill during the run. The cgroup is made fresh at every start and
// removed only by Delete, so its count covers this run alone.
func (d *Driver) endedByOOM(id string, st vmdriver.State) bool {
	if st.Exited && agent.ReadExitSignal(d.agentDir(id)) != int(syscall.SIGKILL) {
		return false
	}
	n, err := d.OOMKills(id)
	return err == nil && n > 0
}
