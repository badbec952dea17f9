package container

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"msb.dev/msb/apis/v1alpha1"

	"msb.dev/msb/vmdriver"
)

// Host is the host-side half of this driver without runc: the sandbox
// directory and its permissions, the overlay rootfs, the agent directory
// (/.msb) with the agent's config, the placed files, and the exit code the
// agent writes. The microVM driver shares a sandbox's preparation with
// containers through it, so both give the agent the same files and both
// keep the same rules about what the sandbox may touch on the host.
type Host struct {
	d *Driver
	// protected is the directory no volume may reach (msbd's state dir).
	protected *Driver
}

// NewHost returns a Host on opts.StateDir (made group HostGID 0710, like the
// driver's, with sandboxes/ below it). opts.RuncPath is not used. No
// volume may be, hold or lie in protected (msbd's whole state directory,
// which holds opts.StateDir).
func NewHost(opts Options, protected string) (*Host, error) {
	if opts.StateDir == "" {
		return nil, errors.New("sandbox host: StateDir is empty")
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
	// Each sandbox gets a slot of the span, as containers do (idalloc.go);
	// a span of one slot is the range all share.
	if opts.IDMapSize == 0 {
		opts.IDMapSize = DefaultIDMapSize
	}
	if uint64(opts.HostUID)+uint64(opts.IDMapSize) > 1<<32-1 || uint64(opts.HostGID)+uint64(opts.IDMapSize) > 1<<32-1 {
		return nil, fmt.Errorf("sandbox host: id map %d/%d+%d overflows 32 bits", opts.HostUID, opts.HostGID, opts.IDMapSize)
	}
	// Cgroups are named for msbd's state dir, as the container driver's
	// are: one leak check, and Stats, find both drivers' sandboxes.
	d := &Driver{opts: opts, cgroupPrefix: CgroupPrefix(protected), locks: map[string]*idLock{},
		ids: newIDAllocator(filepath.Join(abs, "sandboxes"), opts.HostUID, opts.HostGID, opts.IDMapSize)}
	if err := d.lockDown(); err != nil {
		return nil, fmt.Errorf("sandbox host: %w", err)
	}
	d.sharedReason = d.sharedIDReason(abs)
	return &Host{d: d, protected: &Driver{opts: Options{StateDir: protected}}}, nil
}

// ShareIDRanges makes h take its sandboxes' host id ranges from r (the
// container driver's allocator on the same span, which then counts h's
// records too), so no two sandboxes of either driver share a slot. Call
// it before h prepares any sandbox.
func (h *Host) ShareIDRanges(r *IDRanges) error {
	o, ro := h.d.opts, r.d.opts
	if o.HostUID != ro.HostUID || o.HostGID != ro.HostGID || o.IDMapSize != ro.IDMapSize {
		return fmt.Errorf("sandbox host: id span %d/%d+%d differs from the container driver's %d/%d+%d",
			o.HostUID, o.HostGID, o.IDMapSize, ro.HostUID, ro.HostGID, ro.IDMapSize)
	}
	if err := r.d.ids.addDir(filepath.Join(o.StateDir, "sandboxes")); err != nil {
		return err
	}
	h.d.ids = r.d.ids
	if r.d.sharedReason != "" {
		h.d.sharedReason = r.d.sharedReason
	}
	return nil
}

// SharedIDReason says why new sandboxes share one host id range ("" when
// each gets its own).
func (h *Host) SharedIDReason() string { return h.d.sharedReason }

// IDs returns id's recorded host ids (see Prepare, which records them);
// ok is false before the first Prepare.
func (h *Host) IDs(id string) (ids HostIDs, ok bool, err error) {
	r, ok, err := readIDs(h.d.SandboxDir(id))
	if err != nil || !ok {
		return HostIDs{}, ok, err
	}
	return HostIDs{UID: r.UID, GID: r.GID, Size: r.Size, Shared: r.Shared}, true, nil
}

// ReleaseIDs frees id's slot once its sandbox directory is purged.
func (h *Host) ReleaseIDs(id string) { h.d.ids.release(id) }

// IsolationWarnings are the container driver's for a sandbox of h (one in
// the shared range), see Driver.IsolationWarnings.
func (h *Host) IsolationWarnings(id string) []string { return h.d.IsolationWarnings(id) }

// Options are the Host's options with defaults applied.
func (h *Host) Options() Options { return h.d.opts }

// SandboxDir is StateDir/sandboxes/<id>.
func (h *Host) SandboxDir(id string) string { return h.d.SandboxDir(id) }

// Rootfs is where the sandbox's overlay is mounted.
func (h *Host) Rootfs(id string) string { return h.d.rootfsDir(id) }

// AgentDir is the host directory the sandbox sees at /.msb.
func (h *Host) AgentDir(id string) string { return h.d.agentMountPoint(id) }

// AgentMountDir is where the agent directory appears in the sandbox, and
// AgentBinary where the agent binary does.
const (
	AgentMountDir = agentMountDir
	AgentBinary   = agentBinary
)

// Prepare makes the sandbox directory, saves spec, mounts the overlay
// (keeping an existing writable layer), writes the agent's config and the
// placed files. It is idempotent.
func (h *Host) Prepare(spec vmdriver.Spec) error {
	ids, err := h.d.sandboxIDs(spec)
	if err != nil {
		return err
	}
	return h.d.prepareHost(spec, ids, true)
}

// LoadSpec returns the spec Prepare saved; ErrNotFound (wrapped) if none.
func (h *Host) LoadSpec(id string) (vmdriver.Spec, error) { return h.d.loadSpec(id) }

// ClearRunState removes what the agent's previous run left (ready, exit
// code, socket) so a new run never reports the old one's end.
func (h *Host) ClearRunState(id string) error { return clearRunState(h.d.agentMountPoint(id)) }

// ExitCode is the main command's exit code, if the agent wrote one.
func (h *Host) ExitCode(id string) (int, bool) { return readExitCode(h.d.agentMountPoint(id)) }

// Unmount unmounts everything under the sandbox directory.
func (h *Host) Unmount(id string) error { return unmountAll(h.d.SandboxDir(id)) }

// SandboxDirPerms makes dir (created if missing) root:HostGID 0710.
func (h *Host) SandboxDirPerms(dir string) error { return sandboxDirPerms(dir, h.d.opts.HostGID) }

// BindMount is a bind mount into the sandbox's root.
type BindMount struct {
	Source, Target string
	ReadOnly       bool
	// NoExec for placed files without an execute bit.
	NoExec bool
	// Volume is set for the sandbox's volumes: open them with
	// Host.VolumeTree, which follows no link in Source and keeps msbd's
	// state out of reach, never by path.
	Volume bool
}

// VolumeTree opens the host path of volume m without following a link in
// any component, refuses one that reaches msbd's state directory (wrapping
// vmdriver.ErrVolumeRefused), and returns a detached plain-bind mount of
// what it opened (open_tree on the descriptor), nosuid, nodev and read-only
// as m says. Call it at every start.
func (h *Host) VolumeTree(m BindMount) (int, error) {
	g, err := h.protected.newVolumeGuard()
	if err != nil {
		return -1, err
	}
	defer g.Close()
	tree, _, err := openVolumeTree(g, vmdriver.Mount{HostPath: m.Source, Path: m.Target, ReadOnly: m.ReadOnly})
	return tree, err
}

// BindMounts are the bind mounts a backend makes inside the rootfs, in
// order: the agent directory at /.msb, the agent binary over its
// placeholder, the placed files and the volumes.
func (h *Host) BindMounts(spec vmdriver.Spec) []BindMount {
	out := []BindMount{
		{Source: h.d.agentMountPoint(spec.ID), Target: agentMountDir},
		{Source: spec.AgentPath, Target: agentBinary, ReadOnly: true},
	}
	for i, f := range spec.Files {
		out = append(out, BindMount{Source: filepath.Join(h.d.filesDir(spec.ID), strconv.Itoa(i)), Target: f.Path, ReadOnly: true, NoExec: f.Mode&0o111 == 0})
	}
	for _, m := range spec.Mounts {
		out = append(out, BindMount{Source: m.HostPath, Target: m.Path, ReadOnly: m.ReadOnly, Volume: true})
	}
	return out
}

// ValidID checks a sandbox id (it names directories and cgroups).
func ValidID(id string) error { return validID(id) }

// ValidateSpec checks spec before anything is made for it, as Create does.
func (h *Host) ValidateSpec(spec vmdriver.Spec) error {
	if err := validateSpec(spec); err != nil {
		return err
	}
	if err := h.d.checkVolumeSources(spec); err != nil {
		return err
	}
	return h.protected.checkVolumeSources(spec)
}

// CheckNetNS says why path is not a network namespace file, if it is not.
func CheckNetNS(path string) error { return checkNetNS(path) }

// SetLoopbackUp brings lo up in the calling thread's network namespace.
func SetLoopbackUp() error { return setLinkUp("lo") }

// CgroupMounts returns the mount points of every cgroup hierarchy (v1
// controllers, the hybrid unified mount, or the v2 root).
func CgroupMounts() ([]string, error) { return cgroupMounts() }

// Stats reads the resource use and limits of id's cgroups (named with
// CgroupPrefix of msbd's state dir), as the container driver does for its
// own: for a microVM, those of its VMM.
func (h *Host) Stats(id string) (v1alpha1.SandboxStats, error) { return h.d.Stats(id) }
