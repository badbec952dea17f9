package krun

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver/container"
)

// RunnerConfig is what msbd tells a runner (as JSON on descriptor 3).
type RunnerConfig struct {
	Library   string `json:"library"`
	KVMDevice string `json:"kvmDevice"`
	// Root is the sandbox's assembled rootfs, shared with the guest over
	// virtio-fs; Mounts are bound into it first (in the runner's mount
	// namespace, which libkrun's virtio-fs server sees).
	Root   string        `json:"root"`
	Mounts []RunnerMount `json:"mounts"`
	VCPUs  uint8         `json:"vcpus"`
	RAMMiB uint32        `json:"ramMiB"`
	// The guest workload (msb-agent): path inside Root, argv after the
	// program name, environment (always explicit).
	Workdir  string   `json:"workdir"`
	ExecPath string   `json:"execPath"`
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	// PortMap is libkrun's "host:guest" list; empty publishes nothing.
	PortMap []string `json:"portMap"`
	// VsockPort is mapped to the host unix socket VsockSocket, on which
	// libkrun accepts msbd's connections for the guest.
	VsockPort   uint32 `json:"vsockPort"`
	VsockSocket string `json:"vsockSocket"`
	Console     string `json:"console"`
	// VMDir holds VsockSocket and Console; VMRoot is the empty directory
	// the runner mounts its own root on (see enterVMRoot).
	VMDir  string `json:"vmDir"`
	VMRoot string `json:"vmRoot"`
	// OwnNetNS: the runner was given a new network namespace and brings
	// its loopback up (no NetNSPath in the spec).
	OwnNetNS bool   `json:"ownNetNS"`
	LogLevel uint32 `json:"logLevel"`
	// Notes are said in runner.log (resources capped, ports not published).
	Notes []string `json:"notes,omitempty"`
}

// RunnerMount attaches an inherited detached mount (open_tree) in Root.
type RunnerMount struct {
	FD     int    `json:"fd"`
	Target string `json:"target"`
	Dir    bool   `json:"dir"`
}

// RunnerMain is the hidden "msbd krun-runner ID" subcommand: it becomes the
// VMM of one sandbox. msbd started it already placed in the sandbox's
// cgroup, network, user and mount namespaces (see Driver.spawn). It sets
// no-new-privileges, makes the bind mounts, loads libkrun and libkrunfw,
// leaves the host's file system for a root of its own (enterVMRoot),
// configures libkrun and calls krun_start_enter, which never returns: the
// process is the VM from then on and exits with it.
//
// It calls no signal.Notify: libkrun installs the signal handlers it needs
// and Go's must not take their signals.
func RunnerMain(args []string) error {
	status := os.NewFile(runnerStatusFD, "status")
	if status == nil {
		return errors.New("not started by msbd (no status descriptor)")
	}
	fail := func(err error) error {
		fmt.Fprintf(status, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		status.Close()
		return err
	}
	if len(args) != 1 {
		return fail(fmt.Errorf("usage: msbd %s SANDBOX-ID (started by msbd only)", RunnerSubcommand))
	}
	var cfg RunnerConfig
	cf := os.NewFile(runnerConfigFD, "config")
	err := json.NewDecoder(cf).Decode(&cfg)
	cf.Close()
	if err != nil {
		return fail(fmt.Errorf("reading the runner config: %w", err))
	}
	unix.CloseOnExec(runnerStatusFD)
	unix.Close(runnerExeFD)
	for _, n := range cfg.Notes {
		fmt.Fprintln(os.Stderr, "msbd:", n)
	}
	// The VMM keeps running the same thread from here to the end: the
	// main thread, where the caller locked it (see cmd/msbd/krun.go).
	// no_new_privs is per thread: it covers this one and every thread
	// created from it (libkrun's, and the process it becomes), not the Go
	// runtime's threads made before, which never exec.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("no_new_privs: %w", err))
	}
	if err := bindMounts(cfg); err != nil {
		return fail(err)
	}
	if cfg.OwnNetNS {
		if err := container.SetLoopbackUp(); err != nil {
			return fail(fmt.Errorf("loopback: %w", err))
		}
	}
	if err := openKVM(cfg.KVMDevice); err != nil {
		return fail(fmt.Errorf("the sandbox's host user cannot use the KVM device: %w; make %s read-write for others (mode 0666, as systemd sets it)",
			err, cfg.KVMDevice))
	}
	lib, err := Load(cfg.Library)
	if err != nil {
		return fail(err)
	}
	if err := preloadLibkrunfw(); err != nil {
		fmt.Fprintln(os.Stderr, "msbd:", err)
	}
	if cfg, err = enterVMRoot(cfg); err != nil {
		return fail(err)
	}
	if err := configure(lib, cfg); err != nil {
		return fail(err)
	}
	fmt.Fprintln(status, "ok")
	status.Close()
	return lib.StartEnter(ctxID)
}

// ctxID is the context configure made.
var ctxID uint32

// configure makes a libkrun context from cfg. Every array is passed, also
// when empty: libkrun reads NULL as "msbd's environment" (env) and "every
// guest listener" (port map).
func configure(lib *Lib, cfg RunnerConfig) error {
	if err := lib.SetLogLevel(cfg.LogLevel); err != nil {
		return err
	}
	id, err := lib.CreateCtx()
	if err != nil {
		return err
	}
	ctxID = id
	env := cfg.Env
	if env == nil {
		env = []string{}
	}
	ports := cfg.PortMap
	if ports == nil {
		ports = []string{}
	}
	for _, step := range []func() error{
		func() error { return lib.SetVMConfig(id, cfg.VCPUs, cfg.RAMMiB) },
		func() error { return limitTSI(lib, id) },
		func() error { return lib.SetRoot(id, cfg.Root) },
		func() error { return lib.SetWorkdir(id, cfg.Workdir) },
		func() error { return lib.SetExec(id, cfg.ExecPath, cfg.Argv, env) },
		func() error { return lib.SetPortMap(id, ports) },
		func() error { return lib.AddVsockPort(id, cfg.VsockPort, cfg.VsockSocket, true) },
		func() error { return lib.SetConsoleOutput(id, cfg.Console) },
	} {
		if err := step(); err != nil {
			lib.FreeCtx(id)
			return err
		}
	}
	return nil
}

// limitTSI asks libkrun to hijack the guest's inet sockets only: never its
// unix sockets, which the VMM would otherwise connect to host paths for it
// (recent libkrun's heuristics turn that on). Where libkrun lacks the
// call, runner.log says so; the runner's own root (enterVMRoot) leaves
// such a connection no host socket to reach either way.
func limitTSI(lib *Lib, id uint32) error {
	if !lib.Has("krun_disable_implicit_vsock") || !lib.Has("krun_add_vsock") {
		fmt.Fprintln(os.Stderr, "msbd: this libkrun cannot limit TSI to inet sockets (no krun_add_vsock): it hijacks what its defaults say")
		return nil
	}
	if err := lib.DisableImplicitVsock(id); err != nil {
		return err
	}
	return lib.AddVsock(id, TSIHijackInet)
}

// bindMounts makes cfg.Mounts inside cfg.Root. Targets are resolved inside
// the root (openat2 RESOLVE_IN_ROOT), so a symlink in the image never takes
// a mount outside it; missing targets are created the same way.
func bindMounts(cfg RunnerConfig) error {
	// Nothing mounted here may reach msbd's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	rootFD, err := unix.Open(cfg.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFD)
	for _, m := range cfg.Mounts {
		if err := bindMount(root, rootFD, m); err != nil {
			return fmt.Errorf("bind mount at %s: %w", m.Target, err)
		}
		unix.Close(m.FD)
	}
	return nil
}

func bindMount(root *os.Root, rootFD int, m RunnerMount) error {
	rel := strings.TrimPrefix(filepath.Clean(m.Target), "/")
	if rel == "" || rel == "." {
		return errors.New("target is the root")
	}
	if m.Dir {
		if err := root.MkdirAll(rel, 0o755); err != nil {
			return err
		}
	} else {
		if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
			return err
		}
		if f, err := root.OpenFile(rel, os.O_RDONLY|os.O_CREATE, 0o644); err == nil {
			f.Close()
		} else if !errors.Is(err, os.ErrExist) {
			// A directory where a file goes (or the reverse) fails at mount.
			if _, serr := root.Lstat(rel); serr != nil {
				return err
			}
		}
	}
	inRoot := func() (int, error) {
		return unix.Openat2(rootFD, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	}
	tfd, err := inRoot()
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	return unix.MoveMount(m.FD, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}
