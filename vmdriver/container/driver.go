package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

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
	// The span of host ids sandboxes map to: IDMapSize ids from HostUID
	// and HostGID (defaults DefaultHostID, DefaultHostID,
	// DefaultIDMapSize), cut into slots of SlotSize (see idalloc.go). The
	// first slot is the shared range image layers must already be owned
	// by. No host user may hold an id of the span: see CheckIDRange.
	HostUID, HostGID, IDMapSize uint32
	// PooledDiskBytes, when not 0, is the disk size kept ready ahead of
	// starts (msbd's --default-disk; see diskpool.go).
	PooledDiskBytes int64
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

	// ids hands out the sandboxes' host id ranges; sharedReason, when not
	// empty, is why new sandboxes run in the shared range instead.
	ids          *idAllocator
	sharedReason string
	// setsRlimits: msbd may set the sandbox's rlimits through runc (see
	// canSetRlimits).
	setsRlimits bool

	// diskMu serialises making disk templates (disk.go); idmapNS caches
	// the idmapping user namespace of each slot (idmapped.go).
	diskMu   sync.Mutex
	diskPool *diskPool
	idmapMu  sync.Mutex
	// userNS: the user namespaces Create began for the next Start
	// (startns.go).
	userNSMu sync.Mutex
	userNS   map[string]*pendingUserNS
	idmapNS  map[uint32]int

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
		ids:          newIDAllocator(filepath.Join(abs, "sandboxes"), opts.HostUID, opts.HostGID, opts.IDMapSize),
		setsRlimits:  canSetRlimits(),
	}
	if err := d.lockDown(); err != nil {
		return nil, fmt.Errorf("container driver: %w", err)
	}
	d.sharedReason = d.sharedIDReason(abs)
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
	if opts.PooledDiskBytes > 0 {
		if d.diskPool, err = newDiskPool(d, opts.PooledDiskBytes); err != nil {
			return nil, fmt.Errorf("container driver: %w", err)
		}
	}
	return d, nil
}

// sharedIDReason says why new sandboxes of the state dir abs will share
// one host id range ("" when each gets its own): the span holds one range,
// or idmapped mounts do not work there.
func (d *Driver) sharedIDReason(abs string) string {
	if !d.ids.perSandbox() {
		return fmt.Sprintf("the host id span (--uid-size %d) holds a single range of %d ids: every sandbox shares it; give msbd a --uid-size of at least %d for a range per sandbox", d.opts.IDMapSize, SlotSize, 2*SlotSize)
	}
	if err := ProbeIDMappedMounts(abs); err != nil {
		return fmt.Sprintf("idmapped mounts do not work for %s (%v): every sandbox shares one host id range", abs, err)
	}
	return ""
}

// SharedIDReason says why sandboxes share one host id range instead of
// each having its own ("" when they each have one).
func (d *Driver) SharedIDReason() string { return d.sharedReason }

// Name implements vmdriver.Driver.
func (d *Driver) Name() string { return "container" }

// Isolation implements vmdriver.Driver.
func (d *Driver) Isolation() string { return "container" }

// SandboxDir is StateDir/sandboxes/<id>.
func (d *Driver) SandboxDir(id string) string {
	return filepath.Join(d.opts.StateDir, "sandboxes", id)
}

// agentDir is the host directory mounted at /.msb: the agent's config,
// socket, log and exit code (see Endpoint). With a disk it is on the disk,
// which only root may search; runc binds it from agentMountPoint, where
// each start mounts it (startns.go).
func (d *Driver) agentDir(id string) string {
	if _, err := os.Stat(d.diskImage(id)); err == nil {
		return filepath.Join(d.diskDir(id), "agent")
	}
	return d.agentMountPoint(id)
}

// agentMountPoint is where runc finds the agent directory: a path the
// sandbox's root may search to.
func (d *Driver) agentMountPoint(id string) string { return filepath.Join(d.SandboxDir(id), "agent") }

func (d *Driver) rootfsDir(id string) string  { return filepath.Join(d.SandboxDir(id), "rootfs") }
func (d *Driver) bundleDir(id string) string  { return filepath.Join(d.SandboxDir(id), "bundle") }
func (d *Driver) specFile(id string) string   { return filepath.Join(d.SandboxDir(id), "spec.json") }
func (d *Driver) runcLog(id string) string    { return filepath.Join(d.SandboxDir(id), "runc.log") }
func (d *Driver) pidFile(id string) string    { return filepath.Join(d.SandboxDir(id), "pid") }
func (d *Driver) userNSFile(id string) string { return filepath.Join(d.SandboxDir(id), "userns") }

// CgroupPrefix is how the cgroups of sandboxes under the absolute state dir
// begin: "msb-<hash8>-". Leak checkers use it to find what one msbd left.
func CgroupPrefix(stateDir string) string { return "msb-" + hash8(stateDir) + "-" }

// cgroupsPath is deterministic, so Delete can find what runc left behind.
// It is relative to each hierarchy's root (v1) or the unified root (v2).
func (d *Driver) cgroupsPath(id string) string { return "/" + d.cgroupPrefix + id }

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
	// The user namespace (a helper process, milliseconds) is made while
	// the sandbox is prepared, and its network too (by the caller), for
	// the Start that follows.
	ids, err := d.sandboxIDs(spec)
	if err != nil {
		return err
	}
	d.beginUserNS(spec.ID, ids, true)
	if err := d.prepareHost(spec, ids, false); err != nil {
		return err
	}
	// The overlay, the agent directory's bind, the sysfs and the user
	// namespace's bind are made at each start, in the start's own mount
	// namespace (startns.go).
	oci, err := d.ociSpec(spec, d.rootfsDir(spec.ID), ids)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(oci, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(d.bundleDir(spec.ID), "config.json"), b, 0o600)
}

// prepareHost makes what every backend needs on the host for spec (see
// Host), whose host id range is ids (sandboxIDs, which also made its
// directory): the saved spec, the writable layer's directories, the agent
// directory and the placed files; with mountRoot it also mounts the overlay on
// the host (for a backend that shares it from there; the container driver
// mounts it in each start's own namespace instead). It is idempotent.
func (d *Driver) prepareHost(spec vmdriver.Spec, ids sandboxIDs, mountRoot bool) error {
	dir := d.SandboxDir(spec.ID)
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), d.rootfsDir(spec.ID)
	if d.wantsDisk(spec) {
		var err error
		if upper, work, err = d.mountDisk(spec, mountRoot); err != nil {
			return fmt.Errorf("sandbox %s: %w", spec.ID, err)
		}
	}
	if err := sandboxDirPerms(dir, ids.GID); err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(d.specFile(spec.ID), append(b, '\n'), 0o600); err != nil {
		return err
	}
	for _, p := range []string{upper, work, rootfs, d.bundleDir(spec.ID)} {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	// The overlay's root takes upper's owner and mode: the sandbox's root.
	if err := os.Chown(upper, int(ids.UID), int(ids.GID)); err != nil {
		return err
	}
	if err := os.Chmod(upper, 0o755); err != nil {
		return err
	}
	if mountRoot {
		if err := d.mountRootfsOnce(spec, ids); err != nil {
			return err
		}
	}
	if err := d.prepareAgentDir(d.agentDir(spec.ID), spec, ids); err != nil {
		return fmt.Errorf("sandbox %s: agent dir: %w", spec.ID, err)
	}
	if err := d.placeFiles(spec); err != nil {
		return fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	return nil
}

// sandboxIDs returns spec's recorded host id range, allocating one for a
// new sandbox. A writable layer without a record was made by an msbd that
// gave every sandbox the shared range: it keeps that range.
func (d *Driver) sandboxIDs(spec vmdriver.Spec) (sandboxIDs, error) {
	dir := d.SandboxDir(spec.ID)
	if err := os.Mkdir(dir, sandboxDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return sandboxIDs{}, err
	}
	_, err := os.Stat(filepath.Join(dir, "upper"))
	return d.ids.get(spec.ID, dir, d.sharedReason != "" || err == nil)
}

// prepared reports whether Create's work for spec is still in place: the
// bundle's config and, with a disk, the mounted disk.
func (d *Driver) prepared(spec vmdriver.Spec) bool {
	if _, err := os.Stat(filepath.Join(d.bundleDir(spec.ID), "config.json")); err != nil {
		return false
	}
	if _, err := os.Stat(d.diskImage(spec.ID)); err == nil {
		if ok, err := isMountPoint(d.diskDir(spec.ID)); err != nil || !ok {
			return false
		}
	}
	return true
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
// a host reboot removed (overlay mount, bundle, placed files) from the saved
// spec, then runs the agent. Starting a running sandbox does nothing.
func (d *Driver) Start(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	st, err := d.state(ctx, id)
	exists := err == nil
	if err != nil && !errors.Is(err, errNoContainer) {
		return err
	}
	if exists && st.Status.Alive() {
		return nil
	}
	spec, err := d.loadSpec(id)
	if err != nil {
		return err
	}
	if spec.NetNSPath != "" {
		// Gone after a reboot until its creator makes it again: say so
		// rather than pass runc's error on.
		if err := checkNetNS(spec.NetNSPath); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	switch {
	case !exists:
	case st.Status == vmdriver.StatusCreated:
		// Left between create and start (msbd died): finish the start.
		return d.finishStart(ctx, id, st.PID, spec.NetNSPath == "")
	default: // stopped: remove the old runtime object, keep the rootfs
		if _, err := d.runc(ctx, "", "delete", "--force", id); err != nil && !errors.Is(err, errNoContainer) {
			return err
		}
	}
	// Right after Create everything is in place; after a Delete(purge=false)
	// or a reboot the bundle or the overlay is gone and is rebuilt.
	if !d.prepared(spec) || !d.bundleStagesVolumes(spec) {
		if err := d.prepare(spec); err != nil {
			return err
		}
	}
	if err := clearRunState(d.agentDir(id)); err != nil {
		return err
	}
	// Every start opens and checks the volumes' host paths again: a link
	// put in one since the last start is refused here.
	// One `runc run -d` rather than create + start: every runc exec costs
	// tens of milliseconds. lo is set up right after; the agent waits for it
	// before it starts the sandbox's command.
	pidFile := d.pidFile(id)
	launched := false
	err = d.inStartNS(spec, func() error {
		release, err := d.stageVolumes(spec)
		if err != nil {
			return err
		}
		defer release() // the sandbox has its own mounts of the volumes now
		launched = true
		if err := d.launch(ctx, id, "run"); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		if launched {
			d.runc(context.WithoutCancel(ctx), "", "delete", "--force", id)
		}
		return err
	}
	if spec.NetNSPath != "" {
		return nil // its creator set it up
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
// bundle, handing the agent its compiled seccomp filter as fd 3. It runs
// on a start's thread (inStartNS), whose mount and network namespaces runc
// and the sandbox start in (see ociSpec).
func (d *Driver) launch(ctx context.Context, id, verb string) error {
	args := []string{verb}
	if verb == "run" {
		args = append(args, "--detach")
	}
	// --no-new-keyring: no session keyring per sandbox. runc would make one
	// for every container, each charged to the sandboxes' host uid, and the
	// kernel gives a uid 200 keys (kernel.keys.maxkeys): sandbox 201 would
	// not start. The sandbox keeps msbd's session keyring, which its
	// seccomp profile and user namespace keep it from reading.
	args = append(args, "--no-new-keyring", "--bundle", d.bundleDir(id), "--pid-file", d.pidFile(id))
	// The bundle as Create wrote it says what its agent takes: a bundle an
	// older msbd wrote has runc load the profile instead, and must not get
	// a descriptor its agent would never close (nor cgroup ones).
	bundle, berr := d.readBundle(id)
	var extra []*os.File
	if d.seccompFilter != nil && (berr != nil || slices.Contains(bundle.Process.Args, "--seccomp-fd")) {
		f, err := filterPipe(d.seccompFilter)
		if err != nil {
			return err
		}
		defer f.Close()
		extra = append(extra, f)
	}
	var cg []*os.File
	if berr == nil {
		var err error
		if cg, err = d.workloadCgroupFiles(id, bundle); err != nil {
			return err
		}
	}
	for _, f := range cg {
		defer f.Close()
	}
	extra = append(extra, cg...)
	if len(extra) > 0 {
		args = append(args, "--preserve-fds", strconv.Itoa(len(extra)))
	}
	return d.runcDetached(ctx, d.runcLog(id), extra, append(args, id)...)
}

// finishStart brings up lo in the sandbox's network namespace when the
// driver made that namespace (ownNetNS), and lets the created container run.
func (d *Driver) finishStart(ctx context.Context, id string, pid int, ownNetNS bool) error {
	if ownNetNS {
		if err := loopbackUp(pid); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	if _, err := d.runc(ctx, d.runcLog(id), "start", id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
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
