package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// What one idle sandbox of this driver takes from host budgets, measured on
// busybox `sleep` sandboxes (hack/bench/density.sh): the agent's threads and
// the command take pids; msbd holds a pidfd (exit watcher) per sandbox and a
// few more descriptors while it starts one; msbd's mount namespace holds
// the rootfs overlay, the sandbox's sysfs, its netns file and its user
// namespace file.
const (
	tidsPerSandbox   = 6
	fdsPerSandbox    = 2
	mountsPerSandbox = 4
)

var _ vmdriver.HostLimiter = (*Driver)(nil)

// HostLimits implements vmdriver.HostLimiter: the host budgets a sandbox
// start draws on, read now. Session keys are not among them: runc runs with
// --no-new-keyring.
func (d *Driver) HostLimits() []vmdriver.HostLimit {
	var out []vmdriver.HostLimit
	add := func(name string, limit, used, per int64, note string) {
		out = append(out, vmdriver.HostLimit{Name: name, Limit: limit, Used: used, PerSandbox: per, Note: note})
	}
	tasks := countTasks()
	add("kernel.pid_max", sysctl("kernel/pid_max"), tasks, tidsPerSandbox, "pids of every thread on the host")
	add("kernel.threads-max", sysctl("kernel/threads-max"), tasks, tidsPerSandbox, "threads on the host")
	fileNr := int64(-1)
	if f := strings.Fields(readString("/proc/sys/fs/file-nr")); len(f) > 0 {
		fileNr, _ = strconv.ParseInt(f[0], 10, 64)
	}
	add("fs.file-max", sysctl("fs/file-max"), fileNr, fdsPerSandbox, "open files of the host")
	var nofile unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile) == nil {
		fds, _ := os.ReadDir("/proc/self/fd")
		add("RLIMIT_NOFILE of msbd", int64(min(nofile.Cur, 1<<62)), int64(len(fds)), fdsPerSandbox, "msbd's open files (LimitNOFILE=, ulimit -n)")
	}
	mounts := int64(strings.Count(readString("/proc/self/mountinfo"), "\n"))
	add("fs.mount-max", sysctl("fs/mount-max"), mounts, mountsPerSandbox, "mounts in msbd's mount namespace")
	for _, ns := range []string{"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"} {
		add("user.max_"+ns+"_namespaces", sysctl("user/max_"+ns+"_namespaces"), -1, 1, ns+" namespaces of the host")
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.max.descendants"); err == nil {
		limit := int64(-1)
		if s := strings.TrimSpace(string(b)); s != "max" {
			limit, _ = strconv.ParseInt(s, 10, 64)
		}
		add("cgroup.max.descendants", limit, -1, 3, "cgroups below the root (v2): a sandbox's, its agent's and its workload's")
	}
	add("kernel.keys.maxkeys", sysctl("kernel/keys/maxkeys"), -1, 0, "keys per host uid: none per sandbox (runc --no-new-keyring)")
	add("fs.inotify.max_user_instances", sysctl("fs/inotify/max_user_instances"), -1, 0,
		"inotify instances per host uid: none of root's per sandbox; each sandbox's programs draw on its own host uid's")
	if avail := memAvailable(); avail > 0 {
		add("MemAvailable", avail, -1, 2<<20, "memory (bytes), at the 2 MiB an idle sandbox takes (PSS)")
	}
	return out
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// sysctl reads a numeric /proc/sys entry; -1 if missing.
func sysctl(name string) int64 {
	v, err := strconv.ParseInt(strings.TrimSpace(readString(filepath.Join("/proc/sys", name))), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// countTasks is how many threads the host runs (/proc/loadavg's total).
func countTasks() int64 {
	f := strings.Fields(readString("/proc/loadavg"))
	if len(f) < 4 {
		return -1
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func memAvailable() int64 {
	for _, line := range strings.Split(readString("/proc/meminfo"), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}
