package vmdriver

import (
	"errors"
	"strings"
	"testing"
)

// What runc printed when a host budget ran out names the sysctl to raise;
// other failures stay as they were.
func TestAsHostLimit(t *testing.T) {
	for msg, want := range map[string]string{
		// runc 1.1, sandbox 201 of one host uid (issue 14).
		"runc run failed: unable to start container process: error during container init: unable to join session keyring: unable to create session key: disk quota exceeded": "kernel.keys.maxkeys",
		"fork/exec /usr/sbin/runc: too many open files":                                                              "LimitNOFILE",
		"open /proc/self/fd: too many open files in system":                                                          "fs.file-max",
		"nsexec[1234]: failed to unshare remaining namespaces (net, uts, ipc, pid, cgroup): No space left on device": "user.max_user_namespaces",
		"mkdir /sys/fs/cgroup/msb-1/x: no space left on device (cgroup)":                                             "cgroup.max.descendants",
		"runtime/cgo: pthread_create failed: Resource temporarily unavailable (thread)":                              "kernel.threads-max",
	} {
		err := AsHostLimit(errors.New(msg))
		var hl *HostLimitError
		if !errors.As(err, &hl) || !strings.Contains(hl.Raise, want) {
			t.Errorf("%q: got %v, want a host limit naming %s", msg, err, want)
			continue
		}
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: the runtime's message is lost: %v", msg, err)
		}
	}
	for _, msg := range []string{"exec: \"nope\": executable file not found in $PATH", "mount /x: no such file or directory", "no space left on device"} {
		if errors.As(AsHostLimit(errors.New(msg)), new(*HostLimitError)) {
			t.Errorf("%q taken for a host limit", msg)
		}
	}
}

func TestHostLimitRoom(t *testing.T) {
	for _, c := range []struct {
		l    HostLimit
		want int64
	}{
		{HostLimit{Limit: 200, Used: 10, PerSandbox: 2}, 95},
		{HostLimit{Limit: 200, Used: -1, PerSandbox: 1}, 200},
		{HostLimit{Limit: 200, Used: 300, PerSandbox: 1}, 0},
		{HostLimit{Limit: 200, PerSandbox: 0}, -1},
		{HostLimit{Limit: -1, PerSandbox: 1}, -1},
	} {
		if got := c.l.Room(); got != c.want {
			t.Errorf("%+v: Room = %d, want %d", c.l, got, c.want)
		}
	}
}
