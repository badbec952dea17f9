package krun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/container"
)

// Layout. The driver keeps its sandboxes apart from the container driver's,
// under StateDir/krun, and prepares each one with container.Host (the same
// overlay rootfs, agent directory and placed files):
//
//	StateDir/krun/sandboxes/<id>/      root:<its gid> 0710 (container.Host)
//	├── spec.json ids.json upper/ work/ rootfs/ agent/ files/   as for containers
//	├── runner.pid     "PID STARTTIME" of the runner (the VMM) while it may run
//	├── runner.log     the runner's own output (errors before the VM boots)
//	├── vmroot/        root 0700, empty: the runner's own root is mounted here (vmroot.go)
//	└── vm/            <its uid>:<its gid> 0700, written by the runner:
//	    ├── agent.vsock   the unix socket libkrun maps to the guest's vsock AgentPort
//	    └── console.log   the guest console
const (
	// RunnerSubcommand is the hidden msbd subcommand that runs one VM.
	RunnerSubcommand = "krun-runner"
	// AgentPort is the guest vsock port msb-agent listens on, and libkrun
	// connects msbd's connections on agent.vsock to. It stays clear of the
	// ports libkrun gives a meaning of its own: TSI's proxy port (620) and
	// its control requests (1024–1031, proxy create … proxy release), which
	// its vsock muxer dispatches by port number; on 1024 the agent's
	// connections and TSI's requests could be taken for one another.
	//
	// The port is reachable from inside the guest too: the agent accepts
	// every peer on it, so a guest process that can make vsock connections
	// to its own CID (a guest kernel with vsock loopback) reaches the agent
	// as msbd does. The agent should accept the host's CID only (checking
	// the peer address accept returns, in vmdriver/agent's listenVsock).
	AgentPort = 52000

	vmDirName      = "vm"
	vsockSocket    = "agent.vsock"
	consoleLogName = "console.log"
	runnerPidFile  = "runner.pid"
	runnerLogFile  = "runner.log"
)

// Defaults when neither the spec nor the options say.
const (
	defaultVCPUs  = 1
	defaultRAMMiB = 1024
)

// Options configure the krun driver.
type Options struct {
	// StateDir is msbd's state directory; sandboxes live under StateDir/krun.
	StateDir string
	// The span of host ids (--uid-base/--uid-size), as for containers:
	// each sandbox gets a slot of it (container.SlotSize ids, recorded in
	// its ids.json, freed on purge) and its runner runs in a user namespace
	// mapping 0..SlotSize-1 to that slot, so no two VMMs share a host uid.
	HostUID, HostGID, IDMapSize uint32
	// IDRanges, when set, is the container driver's allocator on the same
	// span (msbd's): slots are then unique across both drivers.
	IDRanges *container.IDRanges
	// Library is the libkrun the runner loads (DefaultLibrary when empty);
	// KVMDevice the device it checks (DefaultKVMDevice when empty).
	Library, KVMDevice string
	// RunnerPath is the executable re-run as RunnerSubcommand (msbd
	// itself, os.Executable, when empty).
	RunnerPath string
	// DefaultVCPUs and DefaultRAMMiB size a VM whose spec sets no cpus or
	// memory. MaxVCPUs caps vCPUs (the host's CPUs when 0; libkrun's limit
	// applies too).
	DefaultVCPUs  int
	DefaultRAMMiB int
	MaxVCPUs      int
	// LogLevel is libkrun's (0 off … 5 trace), written to runner.log.
	LogLevel uint32
}

// Driver runs sandboxes as libkrun microVMs, one runner process each.
type Driver struct {
	opts     Options
	host     *container.Host
	cgPrefix string

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

var (
	_ vmdriver.Driver           = (*Driver)(nil)
	_ vmdriver.StatsReader      = (*Driver)(nil)
	_ vmdriver.IsolationAdvisor = (*Driver)(nil)
)

// New returns a driver on opts.StateDir. Runners that an earlier msbd
// started on the same state directory are adopted as they are.
func New(opts Options) (*Driver, error) {
	if opts.StateDir == "" {
		return nil, errors.New("krun driver: StateDir is empty")
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = abs
	if opts.RunnerPath == "" {
		if opts.RunnerPath, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if opts.DefaultVCPUs <= 0 {
		opts.DefaultVCPUs = defaultVCPUs
	}
	if opts.DefaultRAMMiB <= 0 {
		opts.DefaultRAMMiB = defaultRAMMiB
	}
	if opts.MaxVCPUs <= 0 {
		opts.MaxVCPUs = runtime.NumCPU()
	}
	// The runner, its sandbox's uid, searches msbd's state dir to reach
	// the root before it leaves the host's tree (see pivotRoot): group
	// HostGID with g+x where all share the first range, o+x where each has
	// its own (as the container driver does), taking nothing away.
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, err
	}
	if opts.HostGID == 0 {
		opts.HostGID = container.DefaultHostID
	}
	if opts.IDMapSize == 0 {
		opts.IDMapSize = container.DefaultIDMapSize
	}
	search := os.FileMode(0o010)
	if opts.IDMapSize >= 2*container.SlotSize {
		search = 0o011
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, err
	} else if err := os.Chown(abs, -1, int(opts.HostGID)); err != nil {
		return nil, err
	} else if err := os.Chmod(abs, fi.Mode().Perm()|search); err != nil {
		return nil, err
	}
	host, err := container.NewHost(container.Options{StateDir: filepath.Join(abs, "krun"),
		HostUID: opts.HostUID, HostGID: opts.HostGID, IDMapSize: opts.IDMapSize}, abs)
	if err != nil {
		return nil, fmt.Errorf("krun driver: %w", err)
	}
	if opts.IDRanges != nil {
		if err := host.ShareIDRanges(opts.IDRanges); err != nil {
			return nil, fmt.Errorf("krun driver: %w", err)
		}
	}
	ho := host.Options()
	opts.HostUID, opts.HostGID, opts.IDMapSize = ho.HostUID, ho.HostGID, ho.IDMapSize
	// Same cgroup names as the container driver's for this state dir (ids
	// never collide: they are Sandbox UIDs), so one leak check finds both.
	return &Driver{opts: opts, host: host, cgPrefix: container.CgroupPrefix(abs), locks: map[string]*sync.Mutex{}}, nil
}

// Name implements vmdriver.Driver.
func (d *Driver) Name() string { return "krun" }

// Isolation implements vmdriver.Driver.
func (d *Driver) Isolation() string { return vmdriver.IsolationMicroVM }

func (d *Driver) sandboxDir(id string) string { return d.host.SandboxDir(id) }
func (d *Driver) vmDir(id string) string      { return filepath.Join(d.sandboxDir(id), vmDirName) }

// ConsolePath is the file the guest console of id goes to.
func (d *Driver) ConsolePath(id string) string { return filepath.Join(d.vmDir(id), consoleLogName) }

// RunnerLogPath is the runner's own output of id.
func (d *Driver) RunnerLogPath(id string) string {
	return filepath.Join(d.sandboxDir(id), runnerLogFile)
}

func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l := d.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		d.locks[id] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Create implements vmdriver.Driver: it prepares the rootfs, the agent's
// directory and the placed files as for a container. A running VM is left
// alone.
func (d *Driver) Create(ctx context.Context, spec vmdriver.Spec) error {
	if err := d.host.ValidateSpec(spec); err != nil {
		return err
	}
	if err := d.checkSocketPath(spec.ID); err != nil {
		return err
	}
	defer d.lock(spec.ID)()
	if st, err := d.state(spec.ID); err == nil && st.Status.Alive() {
		return nil
	}
	return d.prepare(spec)
}

func (d *Driver) prepare(spec vmdriver.Spec) error {
	if err := d.host.Prepare(spec); err != nil {
		return err
	}
	ids, err := d.ids(spec.ID)
	if err != nil {
		return err
	}
	vm := d.vmDir(spec.ID)
	if err := os.Mkdir(vm, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if fi, err := os.Lstat(vm); err != nil || !fi.IsDir() {
		return fmt.Errorf("sandbox %s: %s is not a directory", spec.ID, vm)
	}
	if err := os.Lchown(vm, int(ids.UID), int(ids.GID)); err != nil {
		return err
	}
	if err := os.Chmod(vm, 0o700); err != nil {
		return err
	}
	// The runner's root is mounted here, in its own namespace only: on
	// the host it stays an empty directory of root's.
	root := filepath.Join(d.sandboxDir(spec.ID), vmRootDirName)
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		return fmt.Errorf("sandbox %s: %s is not a directory", spec.ID, root)
	}
	return os.Lchown(root, 0, 0)
}

// ids returns id's recorded host ids (Prepare records them).
func (d *Driver) ids(id string) (container.HostIDs, error) {
	ids, ok, err := d.host.IDs(id)
	if err == nil && !ok {
		err = fmt.Errorf("sandbox %s: no host id range recorded", id)
	}
	return ids, err
}

// IsolationWarnings implements vmdriver.IsolationAdvisor: a sandbox whose
// VMM runs in the host id range others share (see SharedIDReason).
func (d *Driver) IsolationWarnings(id string) []string { return d.host.IsolationWarnings(id) }

// SharedIDReason says why new microVM sandboxes share one host id range
// ("" when each gets its own).
func (d *Driver) SharedIDReason() string { return d.host.SharedIDReason() }

// checkSocketPath refuses a state dir so deep that libkrun could not bind
// the agent's socket (sockaddr_un holds 107 bytes).
func (d *Driver) checkSocketPath(id string) error {
	if err := container.ValidID(id); err != nil {
		return err
	}
	if p := filepath.Join(d.vmDir(id), vsockSocket); len(p) > 107 {
		return fmt.Errorf("sandbox %s: the agent socket path %s is longer than a unix socket allows (107 bytes): use a shorter --state-dir", id, p)
	}
	return nil
}

// Start implements vmdriver.Driver: it rebuilds what a Delete without
// purge removed, then starts the runner and waits until it has configured
// libkrun and is about to boot (or says why it could not).
func (d *Driver) Start(ctx context.Context, id string) error {
	if err := d.checkSocketPath(id); err != nil {
		return err
	}
	defer d.lock(id)()
	if st, err := d.state(id); err != nil {
		return err
	} else if st.Status.Alive() {
		return nil
	}
	spec, err := d.host.LoadSpec(id)
	if err != nil {
		return err
	}
	if spec.NetNSPath != "" {
		if err := container.CheckNetNS(spec.NetNSPath); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	// Idempotent: after Create it only rewrites the agent's config and the
	// placed files; after a Delete without purge or a reboot it mounts the
	// overlay again.
	if err := d.prepare(spec); err != nil {
		return err
	}
	if err := d.host.ClearRunState(id); err != nil {
		return err
	}
	for _, name := range []string{vsockSocket, consoleLogName, consoleLogName + ".calls"} {
		if err := os.Remove(filepath.Join(d.vmDir(id), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	cfg := d.runnerConfig(spec)
	if err := d.setupCgroup(id, spec, cfg); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := d.spawn(ctx, spec, cfg); err != nil {
		d.killRunner(id)
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	return nil
}

// List implements vmdriver.Driver: every sandbox directory.
func (d *Driver) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.opts.StateDir, "krun", "sandboxes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && container.ValidID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// LayersInUse returns the image layers of every sandbox this driver holds.
func (d *Driver) LayersInUse(ctx context.Context) (map[string]bool, error) {
	ids, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, id := range ids {
		spec, err := d.host.LoadSpec(id)
		if errors.Is(err, vmdriver.ErrNotFound) {
			continue
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

// Endpoint implements vmdriver.Driver: the host end of the guest agent's
// vsock port, and the agent directory (shared through the root) for logs.
func (d *Driver) Endpoint(id string) (vmdriver.Endpoint, error) {
	if err := container.ValidID(id); err != nil {
		return vmdriver.Endpoint{}, err
	}
	return vmdriver.Endpoint{AgentSocket: filepath.Join(d.vmDir(id), vsockSocket), LogDir: d.host.AgentDir(id)}, nil
}

// Delete implements vmdriver.Driver: it kills the runner, removes the
// cgroup and the mounts, and with purge the sandbox directory.
func (d *Driver) Delete(ctx context.Context, id string, purge bool) error {
	if err := container.ValidID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	if err := d.killRunner(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := d.removeCgroup(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := d.host.Unmount(id); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	dir := d.sandboxDir(id)
	if purge {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		d.host.ReleaseIDs(id)
		return nil
	}
	if err := os.Remove(filepath.Join(dir, runnerPidFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Stop implements vmdriver.Driver: it asks the agent to pass SIGTERM to
// the main command, waits grace for the VM to end, then kills the runner.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := container.ValidID(id); err != nil {
		return err
	}
	defer d.lock(id)()
	st, err := d.state(id)
	if errors.Is(err, vmdriver.ErrNotFound) || (err == nil && !st.Status.Alive()) {
		return nil
	}
	if err != nil {
		return err
	}
	if grace > 0 {
		ep, _ := d.Endpoint(id)
		askCtx, cancel := context.WithTimeout(ctx, min(grace, 5*time.Second))
		err := signalMain(askCtx, ep.AgentSocket)
		cancel()
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, grace)
			err = d.waitRun(wctx, id, st.PID)
			cancel()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return d.killRunner(id)
}

// Stats implements vmdriver.StatsReader (msbctl top) from the runner's
// cgroups: the VMM's CPU time and memory (the guest's RAM as far as it has
// touched it, plus the VMM's own), not the guest's view of its processes.
func (d *Driver) Stats(id string) (v1alpha1.SandboxStats, error) { return d.host.Stats(id) }
