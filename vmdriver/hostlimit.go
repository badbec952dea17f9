package vmdriver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
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

// hostLimitPatterns map an error number that runtimes (runc, the kernel
// through them) end with when a host budget is spent, and words of the
// runtime's own message around it, to the limit. Order matters: the first
// that fits wins.
var hostLimitPatterns = []struct {
	errno syscall.Errno
	// words: one must appear in the runtime's own words (none: the errno
	// alone says it); op: in the failing operation's, the part just
	// before the errno ("mount proc:/proc: no space left on device" is a
	// mount; "error mounting ...: mkdir PATH: no space left on device" a
	// full disk).
	words        []string
	op           bool
	limit, raise string
}{
	{syscall.EDQUOT, []string{"session key", "keyring"}, true, "keys of the sandboxes' host uid", "kernel.keys.maxkeys and kernel.keys.maxbytes"},
	{syscall.ENFILE, nil, false, "open files of the whole host", "fs.file-max"},
	{syscall.EMFILE, nil, false, "open files of msbd (RLIMIT_NOFILE, inherited by runc)", "msbd's open-file limit (LimitNOFILE= in its unit, ulimit -n) and fs.nr_open"},
	{syscall.ENOSPC, []string{"namespace", "unshare"}, true, "namespaces the host allows", "user.max_user_namespaces, user.max_mnt_namespaces, user.max_pid_namespaces, user.max_net_namespaces (and the other user.max_*_namespaces)"},
	{syscall.ENOSPC, []string{"cgroup"}, false, "cgroups the host allows", "cgroup.max.descendants of the cgroup root (cgroup v2)"},
	{syscall.ENOSPC, []string{"mount"}, true, "mounts in msbd's mount namespace", "fs.mount-max"},
	{syscall.EAGAIN, []string{"fork", "clone", "thread"}, true, "processes and threads of the host", "kernel.pid_max and kernel.threads-max (and pids.max of msbd's cgroup)"},
}

// hostLimitErrnos are the error numbers of hostLimitPatterns.
var hostLimitErrnos = []syscall.Errno{syscall.EDQUOT, syscall.ENFILE, syscall.EMFILE, syscall.ENOSPC, syscall.EAGAIN}

// AsHostLimit returns err as a *HostLimitError when it says a host budget
// ran out, else err unchanged.
//
// The error number decides: the one err carries, or, as runc reports only
// text, the one whose text ends the message (its root cause: "...: disk
// quota exceeded"). The words that tell which budget it was are looked for
// in the runtime's own words only: quoted strings and paths (a command,
// a mount source, anything a spec names) are left out, so a command named
// "/opt/session key quota exceeded" that does not exist is a missing
// command, not a host limit retried forever.
func AsHostLimit(err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		errno = trailingErrno(err.Error())
	}
	if errno == 0 {
		return err
	}
	msg := err.Error()
	own := ownWords(msg)
	op := ownWords(failingOp(msg))
	for _, p := range hostLimitPatterns {
		if p.errno != errno {
			continue
		}
		in := own
		if p.op {
			in = op
		}
		if len(p.words) == 0 || slices.ContainsFunc(p.words, func(w string) bool { return strings.Contains(in, w) }) {
			return &HostLimitError{Limit: p.limit, Raise: p.raise, Err: err}
		}
	}
	return err
}

// trailingErrno is the host-limit error number whose text ends msg (after
// ": "; a trailing parenthesis such as " (log PATH)" aside), or 0.
func trailingErrno(msg string) syscall.Errno {
	msg = strings.ToLower(stripQuoted(msg))
	last := msg
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		last = msg[i+2:]
	}
	last = strings.TrimSpace(last)
	if i := strings.Index(last, " ("); i >= 0 && strings.HasSuffix(last, ")") {
		last = last[:i]
	}
	for _, e := range hostLimitErrnos {
		if last == e.Error() {
			return e
		}
	}
	return 0
}

// failingOp is the part of msg (quoted strings left out) between the last
// two ": ", the operation the error number ended: "unable to create
// session key" in "...: unable to create session key: disk quota exceeded".
func failingOp(msg string) string {
	msg = stripQuoted(msg)
	i := strings.LastIndex(msg, ": ")
	if i < 0 {
		return ""
	}
	msg = msg[:i]
	if j := strings.LastIndex(msg, ": "); j >= 0 {
		msg = msg[j+2:]
	}
	return msg
}

// ownWords is msg lowercased without quoted strings and paths (words with
// a slash): what the runtime itself said, not what a spec named.
func ownWords(msg string) string {
	msg = strings.ToLower(stripQuoted(msg))
	msg = strings.ReplaceAll(msg, "fork/exec", "forkexec") // Go's word, not a path
	fields := strings.Fields(msg)
	fields = slices.DeleteFunc(fields, func(f string) bool { return strings.Contains(f, "/") })
	return strings.Join(fields, " ")
}

// stripQuoted removes "double-quoted" strings (Go's %q, with \" escapes)
// from msg.
func stripQuoted(msg string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		switch {
		case in && c == '\\' && i+1 < len(msg):
			i++
		case c == '"':
			in = !in
			if !in {
				b.WriteString(`""`)
			}
		case !in:
			b.WriteByte(c)
		}
	}
	return b.String()
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
