// Package vmdriver defines the Driver interface that every sandbox backend
// implements (container via runc, microVM via libkrun), the set of drivers
// msbd holds, and the host probe that says which backends this machine can run.
//
// The seam is drawn so that the reconciler never does a backend's work: it
// hands a backend a complete Spec (image layers, process, limits, the network
// namespace to join, files to place), asks for typed states, waits for a run
// to end through Wait, and reaches the guest agent through the Endpoint the
// backend returns. A backend never reads the store or apis types.
package vmdriver

import (
	"context"
	"errors"
	"os"
	"time"
)

// ErrNotFound is returned for a sandbox the driver does not know.
var ErrNotFound = errors.New("sandbox not found")

// Spec is everything a backend needs to run one sandbox. The reconciler has
// already resolved the image and merged the image config with the Sandbox spec,
// so a backend never reads apis types beyond this.
type Spec struct {
	// ID is the Sandbox UID; it names the runtime object and the sandbox directory.
	ID       string
	Hostname string
	// Layers are read-only image layer directories, lowest first.
	Layers []string
	// AgentPath is the static msb-agent binary the sandbox runs as its init
	// (container) or workload (microVM).
	AgentPath string
	// Process is what the agent runs as the sandbox's main command.
	Args       []string
	Env        []string
	WorkingDir string
	UID, GID   uint32
	// Resources; zero means unlimited.
	MemoryBytes int64
	MilliCPUs   int64
	PIDs        int64
	// DiskBytes bounds the writable layer and the agent directory
	// together; zero means unlimited.
	DiskBytes int64
	Mounts    []Mount
	// LogMaxBytes caps the main command's log; zero means the agent default.
	LogMaxBytes int64

	// NetNSPath is a network namespace (an nsfs bind mount) the sandbox
	// joins: runc by path, the libkrun runner with setns before it becomes
	// the VMM. Empty gives the sandbox a fresh namespace holding only
	// loopback. The namespace belongs to its creator; Delete leaves it.
	NetNSPath string
	// Ports are published from the host to the sandbox. Backends receive
	// them so that each can say what it does with them; the network policy
	// layer that forwards them owns them.
	Ports []Port
	// Files are placed in the sandbox before its command starts, read-only
	// to it (resolv.conf, hosts, a CA bundle). A file the image has at the
	// same path is hidden, not changed.
	Files []File
}

// Mount is a host path bind-mounted into the sandbox.
type Mount struct {
	HostPath, Path string
	ReadOnly       bool
}

// Port is one published port: connections to HostIP:HostPort reach the
// sandbox's ContainerPort.
type Port struct {
	HostIP        string
	HostPort      uint16
	ContainerPort uint16
	// Protocol is "tcp" or "udp".
	Protocol string
}

// File is content msbd places at Path (absolute, inside the sandbox).
type File struct {
	Path string
	Data []byte
	// Mode is the permission bits the sandbox sees (0644 when zero).
	Mode os.FileMode
}

// Status is the phase of a sandbox's runtime object.
type Status string

const (
	// StatusCreated: prepared (rootfs, bundle) but its command not started,
	// or left between create and start by a crash.
	StatusCreated Status = "created"
	// StatusRunning: its command runs.
	StatusRunning Status = "running"
	// StatusPaused: frozen; it still holds its processes.
	StatusPaused Status = "paused"
	// StatusStopped: its command ended (or it was killed), or it was never
	// started on what is kept (a Delete without purge, a reboot).
	StatusStopped Status = "stopped"
)

// Alive reports whether the sandbox holds running processes.
func (s Status) Alive() bool { return s == StatusRunning || s == StatusPaused }

// State is what a backend observed about one sandbox.
type State struct {
	Status Status
	// PID is the host pid of the sandbox's init (container) or VMM
	// (microVM) while it is alive, for operators; 0 otherwise. Nothing
	// outside the backend waits on it: use Driver.Wait.
	PID int
	// ExitCode is valid when Status is StatusStopped and Exited is true;
	// Exited is false when the command was killed without the agent
	// writing its code.
	ExitCode int
	Exited   bool
	// OOMKilled is set for a stopped sandbox whose run the kernel's OOM
	// killer ended: the main command (or the agent) was killed by SIGKILL
	// while the sandbox's memory cgroup counted an OOM kill. A command that
	// exited 137 by itself is not OOMKilled.
	OOMKilled bool
	// StartedAt is when the current run began, if known.
	StartedAt time.Time
}

// Endpoint is how msbd reaches one sandbox's guest agent from the host.
type Endpoint struct {
	// AgentSocket is a host unix socket where the agent protocol is served:
	// the agent's own socket bind-mounted out of a container, or the host
	// end a VMM maps to the guest's vsock port.
	AgentSocket string
	// LogDir is the host directory holding the main command's log ("log",
	// rotated to "log.1"), written by the agent.
	LogDir string
}

// Driver runs sandboxes. Every method is idempotent with respect to the ID so
// the level-triggered reconciler can call it again after a crash.
type Driver interface {
	// Name is the backend's name ("container", "krun"); it is recorded in
	// a Sandbox's status.driver and picks the driver again later.
	Name() string
	// Isolation is what users are told they got ("container" or "microvm").
	Isolation() string
	// Create prepares the sandbox (rootfs, bundle) without starting it. Create on
	// an existing ID re-uses its writable layer and leaves a running sandbox alone.
	Create(ctx context.Context, spec Spec) error
	// Start runs the sandbox's main command; starting a running sandbox
	// does nothing.
	Start(ctx context.Context, id string) error
	// Stop signals the sandbox to end and kills it after grace. Stopping a
	// stopped or unknown sandbox does nothing.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// State reports what is running; ErrNotFound when nothing exists for id.
	State(ctx context.Context, id string) (State, error)
	// Wait blocks until the sandbox's current run has ended or ctx is done,
	// and returns the state it ended in. It returns at once for a sandbox
	// that is not alive, and ErrNotFound for one that does not exist. It
	// works for sandboxes this process did not start (adopted after a
	// restart of msbd).
	Wait(ctx context.Context, id string) (State, error)
	// Delete removes the runtime object, mounts and cgroups but keeps the
	// writable layer unless purge is true (Suspend keeps it; deletion purges).
	Delete(ctx context.Context, id string, purge bool) error
	// List returns the IDs of every sandbox this driver has state for, so
	// msbd can adopt them on start and remove orphans.
	List(ctx context.Context) ([]string, error)
	// Endpoint says where the sandbox's agent and log are, or will be once
	// it runs: it checks neither that they exist nor that the agent
	// answers (a log follower may wait for a sandbox still being pulled).
	// An error means no endpoint can exist for id (a malformed id).
	Endpoint(id string) (Endpoint, error)
}

// OOMCounter is implemented by drivers that can count the processes the
// kernel's OOM killer ended in a sandbox's workload (its memory cgroup's
// oom_kill counter). msbd reads it before and after an exec to tell a
// command killed by the memory limit from one that exited 137 by itself.
type OOMCounter interface {
	OOMKills(id string) (uint64, error)
}

// LayerUser is implemented by drivers that can tell which image layer
// directories their sandboxes use, so an image prune keeps them.
type LayerUser interface {
	LayersInUse(ctx context.Context) (map[string]bool, error)
}

// VolumeAdvisor is implemented by drivers that can tell what is risky about
// a sandbox's volumes on this host (a read-write volume other host users
// can enter, say); the reconciler turns each finding into a Warning event.
// Volumes it refuses outright fail Create instead.
type VolumeAdvisor interface {
	VolumeWarnings(spec Spec) []string
}

// DiskReporter is implemented by drivers that bound a sandbox's disk: used
// and limit in bytes, ok false where the sandbox has no bounded disk (or
// it is not mounted now).
type DiskReporter interface {
	DiskUsage(id string) (used, limit int64, ok bool)
}

// IsolationAdvisor is implemented by drivers that may run a created
// sandbox less isolated from others than they should on this host (the
// container driver without idmapped mounts puts every sandbox in one host
// id range); the reconciler turns each finding into a Warning event, so
// the weaker isolation is never silent.
type IsolationAdvisor interface {
	IsolationWarnings(id string) []string
}
