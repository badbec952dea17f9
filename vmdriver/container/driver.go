package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/seccompbpf"
)

// Options configure the runc driver.
type Options struct {
	// StateDir is msbd's state directory. Sandboxes live in
	// StateDir/sandboxes/<id>/ and runc's --root is StateDir/runc.
	// New gives StateDir the group HostGID and mode 0710 (the owner's bits
	// kept, group search only, nothing for others): the sandboxes' root must
	// search it to reach its rootfs, no other host user may. The directories
	// above it must be searchable by others (o+x).
	StateDir string
	// RuncPath is the runc binary; "runc" looked up in PATH when empty.
	RuncPath string
	// The user namespace maps sandbox ids 0..IDMapSize-1 to host
	// HostUID.. and HostGID.. (defaults DefaultHostID, DefaultHostID,
	// DefaultIDMapSize). Image layers must already be owned by ids in this
	// range. No host user may hold an id of it: see CheckIDRange.
	HostUID, HostGID, IDMapSize uint32
}

// Driver runs sandboxes as runc containers.
type Driver struct {
	opts     Options
	runcPath string
	runcRoot string
	// cgroupPrefix names this state dir's cgroups: "msb-<hash8>-".
	cgroupPrefix string
	// seccompFilter is the sandboxes' seccomp profile compiled once to BPF
	// (seccompbpf wire format), handed to the agent at every start; nil where
	// seccompbpf does not support the architecture and runc loads the profile.
	seccompFilter []byte

	mu    sync.Mutex
	locks map[string]*idLock
}

type idLock struct {
	sync.Mutex
	refs int
}

var _ vmdriver.Driver = (*Driver)(nil)

// New returns a driver for opts.StateDir. It never touches running
// containers: those started by an earlier msbd with the same StateDir are
// adopted as they are.
func New(opts Options) (*Driver, error) {
	if opts.StateDir == "" {
		return nil, errors.New("container driver: StateDir is empty")
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = abs
	if opts.HostUID == 0 {
		opts.HostUID = DefaultHostID
	}
	if opts.HostGID == 0 {
		opts.HostGID = DefaultHostID
	}
	if opts.IDMapSize == 0 {
		opts.IDMapSize = DefaultIDMapSize
	}
	if uint64(opts.HostUID)+uint64(opts.IDMapSize) > 1<<32-1 || uint64(opts.HostGID)+uint64(opts.IDMapSize) > 1<<32-1 {
		return nil, fmt.Errorf("container driver: id map %d/%d+%d overflows 32 bits", opts.HostUID, opts.HostGID, opts.IDMapSize)
	}
	runcPath := opts.RuncPath
	if runcPath == "" {
		runcPath = "runc"
	}
	runcPath, err = exec.LookPath(runcPath)
	if err != nil {
		return nil, fmt.Errorf("runc not found: install it (apt-get install runc): %w", err)
	}
	d := &Driver{
		opts:         opts,
		runcPath:     runcPath,
		runcRoot:     filepath.Join(abs, "runc"),
		cgroupPrefix: CgroupPrefix(abs),
		locks:        map[string]*idLock{},
	}
	if err := d.lockDown(); err != nil {
		return nil, fmt.Errorf("container driver: %w", err)
	}
	// Where this build or kernel cannot take the compiled filter, runc loads
	// the profile itself (with libseccomp, at every start).
	if seccompbpf.Supported() && seccompbpf.Usable() == nil {
		prof, err := seccompProfile()
		if err != nil {
			return nil, fmt.Errorf("container driver: %w", err)
		}
		prog, err := seccompbpf.Compile(prof)
		if err != nil {
			return nil, fmt.Errorf("container driver: compiling the seccomp profile: %w", err)
		}
		d.seccompFilter = seccompbpf.Marshal(prog)
	}
	return d, nil
}

// Permissions. A sandbox's files must be out of reach of every host user but
// root and the sandbox's own root (host HostUID:HostGID): its agent socket
// (host root access to the sandbox), its writable layer, and its mounted
// rootfs, where the image's setuid files keep their bits (see mountOverlay)
// and would be setuid-<mapped uid> programs for anyone who could reach them.
//
// runc bind-mounts the bundle rootfs from inside the user namespace, as the
// sandbox's root, which has no capability over host-owned files: it needs
// search permission on every directory down to sandboxes/<id>/rootfs. So:
//
//	StateDir/              owner kept, group HostGID, mode u=(kept),g=x,o= (0710)
//	StateDir/sandboxes/    root:HostGID 0710
//	StateDir/sandboxes/<id>/  root:HostGID 0710
//	StateDir/runc/         root 0700 (runc init gets its fifo as a descriptor)
//
// Search through the group HostGID lets the sandboxes' root in and no host
// user: CheckIDRange makes sure none holds that gid. The directories above
// StateDir belong to others; they must already be searchable (o+x) and New
// fails if one is not. The image layers (lower dirs) need no search
// permission at all: the overlay is mounted by host root and reads its lower
// dirs with the mounter's credentials.
const (
	stateDirGroupMode = 0o010 // added to the owner's bits of StateDir
	sandboxDirMode    = 0o710
)

// lockDown creates the driver's directories with the modes above, or brings
// those of an existing state dir (older versions made them 0711 and gave
// StateDir o+x) and of its sandboxes to them.
func (d *Driver) lockDown() error {
	state, sandboxes := d.opts.StateDir, filepath.Join(d.opts.StateDir, "sandboxes")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(state)
	if err != nil {
		return err
	}
	if err := os.Chown(state, -1, int(d.opts.HostGID)); err != nil {
		return err
	}
	if err := os.Chmod(state, fi.Mode().Perm()&0o700|stateDirGroupMode); err != nil {
		return err
	}
	if err := os.Mkdir(d.runcRoot, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Chmod(d.runcRoot, 0o700); err != nil {
		return err
	}
	if err := d.sandboxDirPerms(sandboxes); err != nil {
		return err
	}
	entries, err := os.ReadDir(sandboxes)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && validID(e.Name()) == nil {
			if err := d.sandboxDirPerms(filepath.Join(sandboxes, e.Name())); err != nil {
				return err
			}
		}
	}
	for dir := filepath.Dir(state); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !d.searchable(fi) {
			return fmt.Errorf("state dir %s: %s (mode %o) is not searchable by sandbox users: chmod o+x %s or choose another --state-dir", state, dir, fi.Mode().Perm(), dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// sandboxDirPerms makes dir (created if missing) root:HostGID 0710.
func (d *Driver) sandboxDirPerms(dir string) error {
	if err := os.Mkdir(dir, sandboxDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Lchown(dir, 0, int(d.opts.HostGID)); err != nil {
		return err
	}
	return os.Chmod(dir, sandboxDirMode)
}

// searchable reports whether the sandbox's root (host HostUID:HostGID, no
// supplementary groups) may search the directory fi.
func (d *Driver) searchable(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.Mode().Perm()&0o001 != 0
	}
	switch {
	case st.Uid == d.opts.HostUID:
		return st.Mode&0o100 != 0
	case st.Gid == d.opts.HostGID:
		return st.Mode&0o010 != 0
	}
	return st.Mode&0o001 != 0
}

func hash8(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:8]
}

// Name implements vmdriver.Driver.
func (d *Driver) Name() string { return "container" }

// Isolation implements vmdriver.Driver.
func (d *Driver) Isolation() string { return "container" }

// SandboxDir is StateDir/sandboxes/<id>.
func (d *Driver) SandboxDir(id string) string {
	return filepath.Join(d.opts.StateDir, "sandboxes", id)
}

// AgentDir implements vmdriver.Driver: the host directory mounted at /.msb.
func (d *Driver) AgentDir(id string) string { return filepath.Join(d.SandboxDir(id), "agent") }

func (d *Driver) rootfsDir(id string) string { return filepath.Join(d.SandboxDir(id), "rootfs") }
func (d *Driver) bundleDir(id string) string { return filepath.Join(d.SandboxDir(id), "bundle") }
func (d *Driver) specFile(id string) string  { return filepath.Join(d.SandboxDir(id), "spec.json") }
func (d *Driver) runcLog(id string) string   { return filepath.Join(d.SandboxDir(id), "runc.log") }
func (d *Driver) pidFile(id string) string   { return filepath.Join(d.SandboxDir(id), "pid") }

// CgroupPrefix is how the cgroups of sandboxes under the absolute state dir
// begin: "msb-<hash8>-". Leak checkers use it to find what one msbd left.
func CgroupPrefix(stateDir string) string { return "msb-" + hash8(stateDir) + "-" }

// cgroupsPath is deterministic, so Delete can find what runc left behind.
// It is relative to each hierarchy's root (v1) or the unified root (v2).
func (d *Driver) cgroupsPath(id string) string { return "/" + d.cgroupPrefix + id }

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validID(id string) error {
	if !idPattern.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("sandbox id %q: want 1-128 of [A-Za-z0-9_.-], starting with a letter or digit", id)
	}
	return nil
}

// lock serialises operations on one id within this process.
func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l := d.locks[id]
	if l == nil {
		l = &idLock{}
		d.locks[id] = l
	}
	l.refs++
	d.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		d.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(d.locks, id)
		}
		d.mu.Unlock()
	}
}

func validateSpec(spec vmdriver.Spec) error {
	if err := validID(spec.ID); err != nil {
		return err
	}
	if len(spec.Layers) == 0 {
		return fmt.Errorf("sandbox %s: no image layers", spec.ID)
	}
	for _, l := range spec.Layers {
		if !filepath.IsAbs(l) {
			return fmt.Errorf("sandbox %s: layer %q is not an absolute path", spec.ID, l)
		}
	}
	if !filepath.IsAbs(spec.AgentPath) {
		return fmt.Errorf("sandbox %s: agent path %q is not an absolute path", spec.ID, spec.AgentPath)
	}
	if fi, err := os.Stat(spec.AgentPath); err != nil {
		return fmt.Errorf("sandbox %s: agent binary: %w", spec.ID, err)
	} else if !fi.Mode().IsRegular() || fi.Mode()&0o001 == 0 {
		return fmt.Errorf("sandbox %s: agent binary %s must be a regular file executable by others (mode o+x)", spec.ID, spec.AgentPath)
	}
	if len(spec.Args) == 0 {
		return fmt.Errorf("sandbox %s: no command to run (args is empty)", spec.ID)
	}
	for i, m := range spec.Mounts {
		p := filepath.Clean(m.Path)
		if !filepath.IsAbs(m.Path) || p == "/" {
			return fmt.Errorf("sandbox %s: mounts[%d].path %q must be an absolute path other than /", spec.ID, i, m.Path)
		}
		for _, reserved := range []string{agentMountDir, "/proc", "/sys", "/dev"} {
			if p == reserved || strings.HasPrefix(p, reserved+"/") {
				return fmt.Errorf("sandbox %s: mounts[%d].path %q is reserved (%s)", spec.ID, i, m.Path, reserved)
			}
		}
		if !filepath.IsAbs(m.HostPath) {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath %q is not an absolute path", spec.ID, i, m.HostPath)
		}
		if _, err := os.Stat(m.HostPath); err != nil {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
	}
	return nil
}

// checkVolumeSources refuses host paths that are, contain or lie inside
// msbd's state directory: every sandbox's root is the same host uid, so a
// sandbox given that directory could reach the other sandboxes' writable
// layers and agent sockets, and the image layers they all share.
func (d *Driver) checkVolumeSources(spec vmdriver.Spec) error {
	state := d.opts.StateDir
	if real, err := filepath.EvalSymlinks(state); err == nil {
		state = real
	}
	for i, m := range spec.Mounts {
		src, err := filepath.EvalSymlinks(m.HostPath)
		if err != nil {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath: %w", spec.ID, i, err)
		}
		if within(src, state) || within(state, src) {
			return fmt.Errorf("sandbox %s: mounts[%d].hostPath %q would give the sandbox msbd's state directory %s (other sandboxes' files); mount a directory outside it", spec.ID, i, m.HostPath, d.opts.StateDir)
		}
	}
	return nil
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// Create implements vmdriver.Driver. It makes the sandbox directory, mounts
// the overlay (keeping an existing writable layer) and writes the bundle, the
// saved spec and the agent's config. A runc container that already exists
// for the id is left alone.
func (d *Driver) Create(ctx context.Context, spec vmdriver.Spec) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	if err := d.checkVolumeSources(spec); err != nil {
		return err
	}
	defer d.lock(spec.ID)()
	if _, err := d.state(ctx, spec.ID); err == nil {
		return nil // already created or running: leave it
	} else if !errors.Is(err, errNoContainer) {
		return err
	}
	return d.prepare(spec)
}

// prepare makes everything runc needs for spec; it is idempotent.
func (d *Driver) prepare(spec vmdriver.Spec) error {
	dir := d.SandboxDir(spec.ID)
	if err := d.sandboxDirPerms(dir); err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(d.specFile(spec.ID), append(b, '\n'), 0o600); err != nil {
		return err
	}
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), d.rootfsDir(spec.ID)
	for _, p := range []string{upper, work, rootfs, d.bundleDir(spec.ID)} {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	// The overlay's root takes upper's owner and mode: the sandbox's root.
	if err := os.Chown(upper, int(d.opts.HostUID), int(d.opts.HostGID)); err != nil {
		return err
	}
	if err := os.Chmod(upper, 0o755); err != nil {
		return err
	}
	mounted, err := isMountPoint(rootfs)
	if err != nil {
		return err
	}
	if !mounted {
		if err := mountOverlay(spec.Layers, upper, work, rootfs); err != nil {
			return fmt.Errorf("sandbox %s: %w", spec.ID, err)
		}
	}
	if err := d.prepareAgentDir(d.AgentDir(spec.ID), spec); err != nil {
		return fmt.Errorf("sandbox %s: agent dir: %w", spec.ID, err)
	}
	oci, err := d.ociSpec(spec, rootfs)
	if err != nil {
		return err
	}
	b, err = json.MarshalIndent(oci, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(d.bundleDir(spec.ID), "config.json"), b, 0o600)
}

// prepared reports whether Create's work is still in place: the bundle's
// config and the mounted overlay.
func (d *Driver) prepared(id string) bool {
	if _, err := os.Stat(filepath.Join(d.bundleDir(id), "config.json")); err != nil {
		return false
	}
	ok, err := isMountPoint(d.rootfsDir(id))
	return err == nil && ok
}

func (d *Driver) loadSpec(id string) (vmdriver.Spec, error) {
	var spec vmdriver.Spec
	b, err := os.ReadFile(d.specFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return spec, fmt.Errorf("sandbox %s: %w (Create it first)", id, vmdriver.ErrNotFound)
	}
	if err != nil {
		return spec, err
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, fmt.Errorf("sandbox %s: %s: %w", id, d.specFile(id), err)
	}
	return spec, nil
}

// Start implements vmdriver.Driver. It rebuilds what a Delete(purge=false) or
// a host reboot removed (overlay mount, bundle) from the saved spec, then
// runs the agent. Starting a running sandbox does nothing.
func (d *Driver) Start(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	st, err := d.state(ctx, id)
	switch {
	case errors.Is(err, errNoContainer):
	case err != nil:
		return err
	case st.Status == "running" || st.Status == "paused":
		return nil
	case st.Status == "created":
		// Left between create and start (msbd died): finish the start.
		return d.finishStart(ctx, id, st.PID)
	default: // stopped: remove the old runtime object, keep the rootfs
		if _, err := d.runc(ctx, "", "delete", "--force", id); err != nil && !errors.Is(err, errNoContainer) {
			return err
		}
	}
	// Right after Create everything is in place; after a Delete(purge=false)
	// or a reboot the bundle or the overlay is gone and is rebuilt.
	if !d.prepared(id) {
		spec, err := d.loadSpec(id)
		if err != nil {
			return err
		}
		if err := d.prepare(spec); err != nil {
			return err
		}
	}
	if err := clearRunState(d.AgentDir(id)); err != nil {
		return err
	}
	// One `runc run -d` rather than create + start: every runc exec costs
	// tens of milliseconds. lo is set up right after; the agent waits for it
	// before it starts the sandbox's command.
	pidFile := d.pidFile(id)
	if err := d.launch(ctx, id, "run"); err != nil {
		d.runc(context.WithoutCancel(ctx), "", "delete", "--force", id)
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	// The pid file saves a `runc state` (one more runc exec, 30-60ms here).
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("sandbox %s: after run: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("sandbox %s: after run: bad pid file %q", id, b)
	}
	if err := loopbackUp(pid); err != nil {
		// Its namespaces are gone (ENOENT) once it has exited, also while it
		// is a zombie and /proc/<pid> still exists.
		if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(serr, os.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
			return nil // it already ended: State tells how
		}
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	return nil
}

// launch runs `runc run --detach` (verb "run") or `runc create` of id's
// bundle, handing the agent its compiled seccomp filter as fd 3.
func (d *Driver) launch(ctx context.Context, id, verb string) error {
	args := []string{verb}
	if verb == "run" {
		args = append(args, "--detach")
	}
	args = append(args, "--bundle", d.bundleDir(id), "--pid-file", d.pidFile(id))
	var extra []*os.File
	if d.seccompFilter != nil && d.bundleTakesFilter(id) {
		f, err := filterPipe(d.seccompFilter)
		if err != nil {
			return err
		}
		defer f.Close()
		extra = append(extra, f)
		args = append(args, "--preserve-fds", "1")
	}
	return d.runcDetached(ctx, d.runcLog(id), extra, append(args, id)...)
}

// bundleTakesFilter reports whether id's bundle starts the agent with
// --seccomp-fd. A bundle an older msbd wrote has runc load the profile
// instead, and must not get a descriptor its agent would never close.
func (d *Driver) bundleTakesFilter(id string) bool {
	b, err := os.ReadFile(filepath.Join(d.bundleDir(id), "config.json"))
	if err != nil {
		return true // runc fails on the missing bundle anyway
	}
	var cfg struct {
		Process struct {
			Args []string `json:"args"`
		} `json:"process"`
	}
	return json.Unmarshal(b, &cfg) == nil && slices.Contains(cfg.Process.Args, "--seccomp-fd")
}

// finishStart brings up lo in the sandbox's network namespace and lets the
// created container run.
func (d *Driver) finishStart(ctx context.Context, id string, pid int) error {
	if err := loopbackUp(pid); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if _, err := d.runc(ctx, d.runcLog(id), "start", id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	return nil
}

// Stop implements vmdriver.Driver: SIGTERM, then SIGKILL after grace. Stopping
// a stopped or unknown sandbox does nothing.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	st, err := d.state(ctx, id)
	if errors.Is(err, errNoContainer) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status == "stopped" {
		return nil
	}
	if st.Status == "paused" {
		d.runc(ctx, "", "resume", id) // a frozen process cannot handle SIGTERM
	}
	if st.Status != "created" && grace > 0 {
		if _, err := d.runc(ctx, "", "kill", id, "TERM"); err != nil && !notRunning(err) {
			return err
		}
		if stopped, err := d.waitStopped(ctx, id, grace); err != nil || stopped {
			return err
		}
	}
	if _, err := d.runc(ctx, "", "kill", "--all", id, "KILL"); err != nil && !notRunning(err) {
		return err
	}
	if stopped, err := d.waitStopped(ctx, id, 10*time.Second); err != nil || stopped {
		return err
	}
	return fmt.Errorf("sandbox %s: still running 10s after SIGKILL", id)
}

func notRunning(err error) bool {
	return errors.Is(err, errNoContainer) || strings.Contains(err.Error(), "not running") ||
		strings.Contains(err.Error(), "process already finished")
}

// waitStopped polls runc until id is stopped, gone, or timeout passes.
func (d *Driver) waitStopped(ctx context.Context, id string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for wait := 2 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		st, err := d.state(ctx, id)
		if errors.Is(err, errNoContainer) || (err == nil && st.Status == "stopped") {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// State implements vmdriver.Driver. A sandbox whose directory exists but that
// runc does not know (after Delete(purge=false), or before the first Start)
// is "stopped". The exit code is the one the agent wrote.
func (d *Driver) State(ctx context.Context, id string) (vmdriver.State, error) {
	if err := validID(id); err != nil {
		return vmdriver.State{}, err
	}
	st, err := d.state(ctx, id)
	if errors.Is(err, errNoContainer) {
		if _, err := os.Stat(d.SandboxDir(id)); errors.Is(err, os.ErrNotExist) {
			return vmdriver.State{}, fmt.Errorf("sandbox %s: %w", id, vmdriver.ErrNotFound)
		}
		out := vmdriver.State{Status: "stopped"}
		out.ExitCode, out.Exited = readExitCode(d.AgentDir(id))
		return out, nil
	}
	if err != nil {
		return vmdriver.State{}, err
	}
	out := vmdriver.State{Status: st.Status, StartedAt: st.Created}
	switch st.Status {
	case "running", "paused", "created":
		out.PID = st.PID
	case "stopped":
		out.ExitCode, out.Exited = readExitCode(d.AgentDir(id))
	}
	return out, nil
}

// Delete implements vmdriver.Driver. It kills and deletes the runc container,
// unmounts everything under the sandbox directory, removes leftover cgroups
// and the bundle; purge also removes the writable layer and the directory.
// Deleting an unknown sandbox does nothing.
func (d *Driver) Delete(ctx context.Context, id string, purge bool) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	if _, err := d.runc(ctx, "", "delete", "--force", id); err != nil && !errors.Is(err, errNoContainer) {
		// runc could not load its state (corrupt or half-written): if no
		// process is left in the cgroups, remove the state by hand below.
		if procs := d.cgroupProcs(id); procs > 0 {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(d.runcRoot, id)); err != nil {
		return err
	}
	if err := d.removeCgroups(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	dir := d.SandboxDir(id)
	if err := unmountAll(dir); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if purge {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
		return nil
	}
	for _, p := range []string{d.bundleDir(id), filepath.Join(dir, "pid")} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	return nil
}

// List implements vmdriver.Driver: every id with runc state or a sandbox
// directory under this StateDir.
func (d *Driver) List(ctx context.Context) ([]string, error) {
	ids, err := d.list(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	entries, err := os.ReadDir(filepath.Join(d.opts.StateDir, "sandboxes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && validID(e.Name()) == nil && !seen[e.Name()] {
			seen[e.Name()] = true
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// LayersInUse returns the image layer directories of every sandbox this
// driver holds — running, suspended or finished — so an image prune never
// removes a layer a sandbox is mounted on or will mount again on resume.
func (d *Driver) LayersInUse(ctx context.Context) (map[string]bool, error) {
	ids, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, id := range ids {
		spec, err := d.loadSpec(id)
		if errors.Is(err, vmdriver.ErrNotFound) {
			continue // never created: mounts nothing
		}
		if err != nil {
			return nil, err
		}
		for _, l := range spec.Layers {
			used[filepath.Clean(l)] = true
		}
	}
	return used, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
