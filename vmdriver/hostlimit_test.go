package vmdriver

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
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

// The words that name a budget count only in the runtime's own message:
// a command or path a spec chose that holds them (quoted by runc, or a
// path) is not a host limit, so the sandbox fails instead of being
// retried forever; the error number must end the message.
func TestAsHostLimitIgnoresUserStrings(t *testing.T) {
	for _, msg := range []string{
		// A command that does not exist, named with the words.
		`runc run failed: unable to start container process: exec: "/opt/session key quota exceeded/run": stat /opt/session key quota exceeded/run: no such file or directory`,
		`runc create: unable to start container process: exec: "keyring: disk quota exceeded": executable file not found in $PATH (log /var/lib/msb/sandboxes/x/runc.log)`,
		// A path whose own name ends like an errno, with the root cause after it.
		`runc run failed: unable to start container process: error during container init: stat /data: session keyring: disk quota exceeded: no such file or directory`,
		// A real ENOSPC of a disk whose path holds the words: not a host budget.
		`runc run failed: unable to start container process: error mounting "/srv/cgroup namespace mount" to rootfs at "/data": mkdir /var/lib/msb/sandboxes/x/rootfs/cgroup/mount/namespace: no space left on device`,
		// A fork that failed for another reason, in a path named "fork".
		`runc run failed: exec: "/bin/fork": stat /bin/fork: resource temporarily unavailable`,
	} {
		if err := AsHostLimit(errors.New(msg)); errors.As(err, new(*HostLimitError)) {
			t.Errorf("%q taken for a host limit: %v", msg, err)
		}
	}
	// The runtime's own words still count when a path is beside them, and
	// runcDetached's "(log PATH)" after the errno is no obstacle.
	for msg, want := range map[string]string{
		`runc run: runc run failed: unable to start container process: error during container init: unable to join session keyring: unable to create session key: disk quota exceeded (log /var/lib/msb/sandboxes/x/runc.log)`: "kernel.keys.maxkeys",
		`runc create: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/pids/msb-x: no space left on device`:                                                                                                          "cgroup.max.descendants",
		`fork/exec /usr/sbin/runc: resource temporarily unavailable`: "kernel.pid_max",
	} {
		var hl *HostLimitError
		if err := AsHostLimit(errors.New(msg)); !errors.As(err, &hl) || !strings.Contains(hl.Raise, want) {
			t.Errorf("%q: got %v, want a host limit naming %s", msg, err, want)
		}
	}
	// An error number carried by the error decides without its text.
	var hl *HostLimitError
	if err := AsHostLimit(fmt.Errorf("starting runc: %w", &os.PathError{Op: "fork/exec", Path: "/usr/sbin/runc", Err: syscall.EMFILE})); !errors.As(err, &hl) || !strings.Contains(hl.Raise, "LimitNOFILE") {
		t.Errorf("EMFILE carried by the error: got %v, want the open-file limit", err)
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
