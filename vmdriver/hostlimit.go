package vmdriver

import (
	"fmt"
	"strings"
)

// HostLimitError is a sandbox start that failed on a host-wide or per-uid
// budget (keys, file descriptors, pids, namespaces, cgroups, mounts), not
// on anything in the sandbox's spec: it names the limit and the sysctl (or
// setting) to raise, so the operator gets a word instead of a runtime's
// message. The reconciler retries it with backoff; starts succeed again
// once the limit is raised or other sandboxes end.
type HostLimitError struct {
	// Limit is what ran out, in a few words ("session keys of the sandboxes' host uid").
	Limit string
	// Raise is the sysctl or setting to raise ("kernel.keys.maxkeys").
	Raise string
	// Err is the runtime's own error.
	Err error
}

func (e *HostLimitError) Error() string {
	return fmt.Sprintf("host limit reached: %s; raise %s (then msbd retries by itself): %v", e.Limit, e.Raise, e.Err)
}

func (e *HostLimitError) Unwrap() error { return e.Err }

// hostLimitPatterns map what runtimes (runc, the kernel through them) say
// when a host budget is spent to the limit. Order matters: the first whose
// words all appear wins.
var hostLimitPatterns = []struct {
	words        []string
	limit, raise string
}{
	{[]string{"session key", "quota exceeded"}, "keys of the sandboxes' host uid", "kernel.keys.maxkeys and kernel.keys.maxbytes"},
	{[]string{"keyring", "quota exceeded"}, "keys of the sandboxes' host uid", "kernel.keys.maxkeys and kernel.keys.maxbytes"},
	{[]string{"too many open files in system"}, "open files of the whole host", "fs.file-max"},
	{[]string{"too many open files"}, "open files of msbd (RLIMIT_NOFILE, inherited by runc)", "msbd's open-file limit (LimitNOFILE= in its unit, ulimit -n) and fs.nr_open"},
	{[]string{"no space left on device", "namespace"}, "namespaces the host allows", "user.max_user_namespaces, user.max_mnt_namespaces, user.max_pid_namespaces, user.max_net_namespaces (and the other user.max_*_namespaces)"},
	{[]string{"no space left on device", "unshare"}, "namespaces the host allows", "user.max_user_namespaces, user.max_mnt_namespaces, user.max_pid_namespaces, user.max_net_namespaces (and the other user.max_*_namespaces)"},
	{[]string{"no space left on device", "cgroup"}, "cgroups the host allows", "cgroup.max.descendants of the cgroup root (cgroup v2)"},
	{[]string{"no space left on device", "mount"}, "mounts in msbd's mount namespace", "fs.mount-max"},
	{[]string{"resource temporarily unavailable", "fork"}, "processes and threads of the host", "kernel.pid_max and kernel.threads-max (and pids.max of msbd's cgroup)"},
	{[]string{"resource temporarily unavailable", "clone"}, "processes and threads of the host", "kernel.pid_max and kernel.threads-max (and pids.max of msbd's cgroup)"},
	{[]string{"resource temporarily unavailable", "thread"}, "processes and threads of the host", "kernel.pid_max and kernel.threads-max (and pids.max of msbd's cgroup)"},
}

// AsHostLimit returns err as a *HostLimitError when its message says a host
// budget ran out, else err unchanged.
func AsHostLimit(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.ToLower(err.Error())
	for _, p := range hostLimitPatterns {
		all := true
		for _, w := range p.words {
			if !strings.Contains(msg, w) {
				all = false
				break
			}
		}
		if all {
			return &HostLimitError{Limit: p.limit, Raise: p.raise, Err: err}
		}
	}
	return err
}

// HostLimit is one host budget that sandbox starts draw on, as a driver
// knows its own costs: how much there is, how much is in use now (-1 when
// the kernel does not tell), and what one idle sandbox takes.
type HostLimit struct {
	// Name is the sysctl or setting ("kernel.pid_max", "RLIMIT_NOFILE of msbd").
	Name string
	// Limit is the budget; 0 or less means none is set.
	Limit int64
	// Used is what is in use now (-1: unknown, taken as 0).
	Used int64
	// PerSandbox is what one idle sandbox takes (0: none).
	PerSandbox int64
	// Note says what is counted, in a few words.
	Note string
}

// Room is how many more sandboxes the limit leaves room for; -1 when it
// does not bound them (no limit, or sandboxes take none of it).
func (l HostLimit) Room() int64 {
	if l.PerSandbox <= 0 || l.Limit <= 0 {
		return -1
	}
	used := max(l.Used, 0)
	if used >= l.Limit {
		return 0
	}
	return (l.Limit - used) / l.PerSandbox
}

// HostLimiter is implemented by drivers that know which host budgets their
// sandboxes take (msbctl info shows how many sandboxes they leave room for).
type HostLimiter interface {
	HostLimits() []HostLimit
}
