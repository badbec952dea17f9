// Package vmdriver defines the Driver interface that every sandbox backend
// implements (container via runc, microVM via libkrun) and the host probe that
// says which backends this machine can run.
package vmdriver

import (
	"context"
	"errors"
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
	// AgentPath is the static msb-agent binary placed at /.msb/msb-agent.
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
	Mounts      []Mount
	// LogMaxBytes caps the main command's log; zero means the agent default.
	LogMaxBytes int64
}

// Mount is a host path bind-mounted into the sandbox.
type Mount struct {
	HostPath, Path string
	ReadOnly       bool
}

// State is what a backend observed about one sandbox.
type State struct {
	// Status is "created", "running", "stopped" or "paused"; "" when unknown.
	Status string
	// PID is the host PID of the sandbox's init (0 when not running).
	PID int
	// ExitCode is valid when Status is "stopped" and Exited is true.
	ExitCode int
	Exited   bool
	// StartedAt is when the current run began, if known.
	StartedAt time.Time
}

// Driver runs sandboxes. Every method is idempotent with respect to the ID so
// the level-triggered reconciler can call it again after a crash.
type Driver interface {
	// Name is the backend's name ("container", "krun").
	Name() string
	// Isolation is what users are told they got ("container" or "microvm").
	Isolation() string
	// Create prepares the sandbox (rootfs, bundle) without starting it. Create on
	// an existing ID re-uses its writable layer.
	Create(ctx context.Context, spec Spec) error
	// Start runs the sandbox's main command.
	Start(ctx context.Context, id string) error
	// Stop signals the sandbox to end and kills it after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// State reports what is running; ErrNotFound when nothing exists for id.
	State(ctx context.Context, id string) (State, error)
	// Delete removes the runtime object, mounts and cgroups but keeps the
	// writable layer unless purge is true (Suspend keeps it; deletion purges).
	Delete(ctx context.Context, id string, purge bool) error
	// List returns the IDs of every sandbox this driver has state for, so
	// msbd can adopt them on start and remove orphans.
	List(ctx context.Context) ([]string, error)
	// AgentDir is the host directory mounted at /.msb in the sandbox (agent
	// socket, log, exit-code).
	AgentDir(id string) string
}
