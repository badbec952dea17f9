package container

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// User namespaces. A sandbox's user namespace is made by msbd, not by runc,
// so that its owner is the sandbox's own host uid instead of root: the
// kernel charges what the processes of a user namespace hold against the
// per-user budgets (inotify instances and watches, mqueue bytes, queued
// signals, user namespaces, …) of its owner in every ancestor namespace, so
// a sandbox that exhausts them exhausts its own, never host root's or another
// sandbox's. runc then joins the namespace by path (config.json), as it joins
// a network namespace.
//
// A namespace's owner is the effective uid of the process that creates it.
// Go cannot unshare(CLONE_NEWUSER) in a multithreaded process, so msbd
// clones a small helper into a new user namespace from a locked OS thread
// whose effective ids it has set to the owner's (the thread is discarded
// afterwards). The helper is this binary re-executed under the name
// holderArg0 (see the init below): it lowers the per-namespace limits of
// /proc/sys/user (writable by CAP_SYS_RESOURCE in the namespace, which it
// holds as an ambient capability), says "ok" and waits for its stdin to
// close. Meanwhile msbd writes the id maps and bind-mounts the namespace on
// a file under the sandbox directory, which keeps it alive.

// holderArg0 is argv[0] of the helper process.
const holderArg0 = "msb-userns-holder"

func init() {
	if len(os.Args) > 0 && os.Args[0] == holderArg0 {
		os.Exit(holderMain(os.Args[1:]))
	}
}

// holderMain writes each "name=value" of args to /proc/sys/user/<name> (of
// its own user namespace), answers "ok" or the error on stdout, and waits
// for stdin to reach EOF.
func holderMain(args []string) int {
	for _, a := range args {
		name, val, ok := strings.Cut(a, "=")
		if !ok || strings.ContainsAny(name, "/.") {
			fmt.Printf("bad limit %q\n", a)
			return 2
		}
		if err := os.WriteFile("/proc/sys/user/"+name, []byte(val), 0); err != nil {
			fmt.Printf("user.%s=%s: %v\n", name, val, err)
			return 1
		}
	}
	fmt.Println("ok")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// userLimits are the per-user limits of /proc/sys/user inside a sandbox's
// user namespace: how much of each kind one uid of the sandbox may hold
// (the sandbox as a whole is bounded by its owner's budget on the host).
// Each is lowered to the host's value where that is smaller.
var userLimits = []struct {
	name string
	max  int64
}{
	{"max_inotify_instances", 128},
	{"max_inotify_watches", 65536},
	{"max_fanotify_groups", 16},
	{"max_fanotify_marks", 8192},
	{"max_user_namespaces", 16},
	{"max_net_namespaces", 16},
	{"max_mnt_namespaces", 64},
	{"max_pid_namespaces", 16},
	{"max_ipc_namespaces", 16},
	{"max_uts_namespaces", 16},
	{"max_cgroup_namespaces", 16},
	{"max_time_namespaces", 16},
}

// sandboxUserLimits returns userLimits as holder arguments, each capped at
// the host's current value; limits this kernel lacks are left out.
func sandboxUserLimits() []string {
	var out []string
	for _, l := range userLimits {
		b, err := os.ReadFile("/proc/sys/user/" + l.name)
		if err != nil {
			continue
		}
		host, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s=%d", l.name, min(host, l.max)))
	}
	return out
}

// idMap is one line of a uid_map or gid_map: inside ids [inside,
// inside+size) are host ids [host, host+size).
type idMap struct{ inside, host, size uint32 }

func (m idMap) String() string { return fmt.Sprintf("%d %d %d\n", m.inside, m.host, m.size) }

// newUserNS starts a helper in a new user namespace owned by host uid
// ownerUID (group ownerGID), with uid and gid maps uids and gids and the
// per-user limits limits, and returns it once the namespace is ready. The
// namespace lives while the helper does (or a bind mount of it).
func newUserNS(ownerUID, ownerGID uint32, uids, gids idMap, limits []string) (*holder, error) {
	holder, err := startHolder(ownerUID, ownerGID, true, limits, nil)
	if err != nil {
		return nil, err
	}
	pid := holder.proc.Pid
	for _, m := range []struct {
		file string
		m    idMap
	}{{"uid_map", uids}, {"gid_map", gids}} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, m.file), []byte(m.m.String()), 0); err != nil {
			holder.stop()
			return nil, fmt.Errorf("user namespace: writing %s: %w", m.file, err)
		}
	}
	if err := holder.waitOK(); err != nil {
		holder.stop()
		return nil, err
	}
	return holder, nil
}

// bind bind-mounts the helper's user namespace on target (in the calling
// thread's mount namespace).
func (h *holder) bind(target string) error {
	if err := bindNS(fmt.Sprintf("/proc/%d/ns/user", h.proc.Pid), target); err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	return nil
}

// idmapUserNS returns a descriptor of a new user namespace (owned by root)
// that maps ids m, for MOUNT_ATTR_IDMAP: no process stays in it.
func idmapUserNS(uids, gids idMap) (int, error) {
	maps := &idMaps{
		uids: []syscall.SysProcIDMap{{ContainerID: int(uids.inside), HostID: int(uids.host), Size: int(uids.size)}},
		gids: []syscall.SysProcIDMap{{ContainerID: int(gids.inside), HostID: int(gids.host), Size: int(gids.size)}},
	}
	holder, err := startHolder(0, 0, false, nil, maps)
	if err != nil {
		return -1, err
	}
	defer holder.stop()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", holder.proc.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("idmap user namespace: %w", err)
	}
	return fd, nil
}

type idMaps struct{ uids, gids []syscall.SysProcIDMap }

// holder is a running helper process in a new user namespace.
type holder struct {
	proc   *os.Process
	stdin  *os.File // closing it ends the helper
	stdout *bufio.Reader
	out    *os.File
}

// startHolder starts the helper in a new user namespace. With asOwner the
// clone happens on a thread whose effective ids are ownerUID/ownerGID, so
// they own the namespace (and the helper keeps CAP_SYS_RESOURCE in it to
// write limits); otherwise root owns it and Go writes maps before exec.
func startHolder(ownerUID, ownerGID uint32, asOwner bool, limits []string, maps *idMaps) (*holder, error) {
	// /proc/self/exe, not the binary's path: no directory above the binary
	// need be searchable by the owner (the binary itself must be o+x).
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	sys := &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
	if asOwner {
		sys.AmbientCaps = []uintptr{unix.CAP_SYS_RESOURCE}
	}
	if maps != nil {
		sys.UidMappings, sys.GidMappings = maps.uids, maps.gids
		sys.GidMappingsEnableSetgroups = true
	}
	attr := &os.ProcAttr{Files: []*os.File{inR, outW, nil}, Sys: sys}
	args := append([]string{holderArg0}, limits...)
	type result struct {
		p   *os.Process
		err error
	}
	done := make(chan result, 1)
	go func() {
		if asOwner {
			// Never unlocked: the thread's credentials are changed for good
			// and the runtime discards it when this goroutine ends.
			runtime.LockOSThread()
			if err := setThreadIDs(ownerUID, ownerGID); err != nil {
				done <- result{nil, err}
				return
			}
		}
		p, err := os.StartProcess("/proc/self/exe", args, attr)
		done <- result{p, err}
	}()
	r := <-done
	inR.Close()
	outW.Close()
	if r.err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("user namespace: starting the helper: %w", r.err)
	}
	return &holder{proc: r.p, stdin: inW, stdout: bufio.NewReader(outR), out: outR}, nil
}

// setThreadIDs sets the calling thread's (not the process's) effective uid
// and gid and drops its supplementary groups; real and saved ids stay root.
func setThreadIDs(uid, gid uint32) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	keep := uintptr(^uint32(0)) // -1: unchanged
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}

// waitOK reads the helper's answer.
func (h *holder) waitOK() error {
	line, err := h.stdout.ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		return nil
	}
	if line == "" && err != nil {
		return fmt.Errorf("user namespace helper: %w", err)
	}
	return fmt.Errorf("user namespace helper: %s", line)
}

// stop ends the helper and reaps it.
func (h *holder) stop() {
	h.stdin.Close()
	h.out.Close()
	if _, err := h.proc.Wait(); err != nil {
		h.proc.Kill()
		h.proc.Wait()
	}
}

// bindNS bind-mounts the namespace file src on target (created if missing).
func bindNS(src, target string) error {
	if f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o444); err != nil {
		return err
	} else {
		f.Close()
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", src, target, err)
	}
	return nil
}

// userNSOwner returns the host uid owning the user namespace at path.
func userNSOwner(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var uid uint32
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(unix.NS_GET_OWNER_UID), uintptr(unsafe.Pointer(&uid)))
	if e != 0 {
		return 0, fmt.Errorf("NS_GET_OWNER_UID %s: %w", filepath.Base(path), e)
	}
	return uid, nil
}
