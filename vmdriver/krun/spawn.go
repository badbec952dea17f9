package krun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/container"
)

// Descriptors the runner is started with.
const (
	runnerConfigFD = 3 // RunnerConfig as JSON, then EOF
	runnerStatusFD = 4 // the runner writes "ok" or "error: ..." before it boots
	runnerExeFD    = 5 // msbd's executable, run as /proc/self/fd/5
	// then the bind mounts, detached (open_tree)
)

// runnerStartLimit bounds how long Start waits for a runner to configure
// libkrun (mounts and a few library calls: far less in practice).
const runnerStartLimit = 60 * time.Second

func validID(id string) error { return container.ValidID(id) }

// agentEnv is the agent's environment in the guest, given to libkrun
// explicitly (never msbd's own). The sandbox's command gets the spec's
// environment from the agent's config, not this.
var agentEnv = []string{"HOME=/", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// runnerConfig sizes the VM from spec (capped to what the host allows) and
// says what the guest runs.
func (d *Driver) runnerConfig(spec vmdriver.Spec) RunnerConfig {
	cfg := RunnerConfig{
		Library:     d.opts.Library,
		KVMDevice:   d.opts.KVMDevice,
		Root:        d.host.Rootfs(spec.ID),
		Workdir:     "/",
		ExecPath:    container.AgentBinary,
		Argv:        []string{"init", "--dir", container.AgentMountDir, "--vsock-port", strconv.Itoa(AgentPort)},
		Env:         agentEnv,
		PortMap:     []string{},
		VsockPort:   AgentPort,
		VsockSocket: filepath.Join(d.vmDir(spec.ID), vsockSocket),
		Console:     d.ConsolePath(spec.ID),
		VMDir:       d.vmDir(spec.ID),
		VMRoot:      filepath.Join(d.sandboxDir(spec.ID), vmRootDirName),
		OwnNetNS:    spec.NetNSPath == "",
		LogLevel:    d.opts.LogLevel,
	}
	vcpus := d.opts.DefaultVCPUs
	if spec.MilliCPUs > 0 {
		vcpus = int((spec.MilliCPUs + 999) / 1000)
	}
	if limit := min(d.opts.MaxVCPUs, 255); vcpus > limit {
		cfg.Notes = append(cfg.Notes, fmt.Sprintf("resources.cpus asks for %d vCPUs; capped to %d, what this host allows", vcpus, limit))
		vcpus = limit
	}
	cfg.VCPUs = uint8(vcpus)
	ram := int64(d.opts.DefaultRAMMiB)
	if spec.MemoryBytes > 0 {
		ram = (spec.MemoryBytes + 1<<20 - 1) >> 20
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		if total := int64(si.Totalram) * int64(si.Unit) >> 20; total > 0 && ram > total {
			cfg.Notes = append(cfg.Notes, fmt.Sprintf("resources.memory asks for %d MiB; capped to %d MiB, the host's memory", ram, total))
			ram = total
		}
	}
	cfg.RAMMiB = uint32(ram)
	for _, p := range spec.Ports {
		// Under TSI the VMM listens in the sandbox's network namespace for
		// the guest: on the guest's own port, where the network layer
		// forwards published ports to, as for a container.
		if p.Protocol == "" || p.Protocol == "tcp" {
			cfg.PortMap = append(cfg.PortMap, fmt.Sprintf("%d:%d", p.ContainerPort, p.ContainerPort))
		} else {
			cfg.Notes = append(cfg.Notes, fmt.Sprintf("port %d/%s is not published: libkrun maps TCP ports only", p.ContainerPort, p.Protocol))
		}
	}
	return cfg
}

// spawn starts spec's runner: in the sandbox's cgroups, in
// its network namespace (started from a thread that entered it), in a user
// namespace where it is root but the host sees the sandbox's own uid (its
// slot of the span: no other VMM runs as it), as PID 1 of a PID namespace
// of its own (its /proc shows no host process, see vmroot.go), and in a
// mount namespace of its own for the bind mounts it makes in the root. It
// returns once the runner has configured libkrun.
func (d *Driver) spawn(ctx context.Context, spec vmdriver.Spec, cfg RunnerConfig) error {
	id := spec.ID
	var closeAfter []*os.File
	defer func() {
		for _, f := range closeAfter {
			f.Close()
		}
	}()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return err
	}
	defer statusR.Close()
	closeAfter = append(closeAfter, cfgR, statusW)
	extra := []*os.File{cfgR, statusW}

	// msbd opens what the runner needs from the host and hands it over as
	// descriptors: the runner (an unprivileged uid on the host) need not be
	// able to reach those paths, and they cannot be swapped meanwhile.
	exe, err := os.Open(d.opts.RunnerPath)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	closeAfter = append(closeAfter, exe)
	extra = append(extra, exe)
	for _, m := range d.host.BindMounts(spec) {
		fd, err := -1, error(nil)
		if m.Volume { // no link followed, msbd's state out of reach
			fd, err = d.host.VolumeTree(m)
		} else {
			fd, err = detachedBind(m)
		}
		if err != nil {
			return fmt.Errorf("bind mount of %s: %w", m.Source, err)
		}
		f := os.NewFile(uintptr(fd), m.Source)
		closeAfter = append(closeAfter, f)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		cfg.Mounts = append(cfg.Mounts, RunnerMount{FD: 3 + len(extra), Target: m.Target, Dir: st.Mode&unix.S_IFMT == unix.S_IFDIR})
		extra = append(extra, f)
	}
	logf, err := os.OpenFile(d.RunnerLogPath(id), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	closeAfter = append(closeAfter, logf)
	for _, n := range cfg.Notes {
		fmt.Fprintf(logf, "msbd: %s\n", n)
	}

	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if v, ok := os.LookupEnv("LD_LIBRARY_PATH"); ok {
		env = append(env, "LD_LIBRARY_PATH="+v) // so the runner finds the libkrun the probe found
	}
	ids, err := d.ids(id)
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path:       fmt.Sprintf("/proc/self/fd/%d", runnerExeFD),
		Args:       []string{"msbd", RunnerSubcommand, id},
		Env:        env,
		Stdout:     logf,
		Stderr:     logf,
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:                     true,
			Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.UID), Size: int(ids.Size)}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.GID), Size: int(ids.Size)}},
			GidMappingsEnableSetgroups: true,
			Credential:                 &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
		},
	}
	if cfg.OwnNetNS {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	}
	if err := startIn(spec.NetNSPath, cmd); err != nil {
		return fmt.Errorf("starting the runner: %w", err)
	}
	go cmd.Wait() // reap it while msbd lives; after a restart, whoever adopts it does
	for _, f := range closeAfter {
		f.Close()
	}
	closeAfter = nil
	if err := d.writePid(id, cmd.Process.Pid); err != nil {
		return err
	}
	// Into its cgroups before it reads its config: it does nothing before.
	if err := d.joinCgroup(id, cmd.Process.Pid); err != nil {
		return err
	}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		return fmt.Errorf("runner config: %w", err)
	}
	cfgW.Close()
	return d.runnerStatus(ctx, id, statusR)
}

// detachedBind clones m's source into a detached mount (open_tree), read-only
// and the rest as m says: the runner attaches it in its own mount namespace,
// which a bind mount from a path in msbd's namespace could not reach.
func detachedBind(m container.BindMount) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, err
	}
	var attr unix.MountAttr
	if m.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	}
	if m.NoExec {
		attr.Attr_set |= unix.MOUNT_ATTR_NOEXEC
	}
	if attr.Attr_set != 0 {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// startIn starts cmd from a thread that has entered the network namespace
// netnsPath (none: msbd's own, or a new one by cmd's clone flags). The
// thread is never handed back: it dies with its goroutine.
func startIn(netnsPath string, cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if netnsPath == "" {
			defer runtime.UnlockOSThread()
		} else {
			fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errc <- fmt.Errorf("network namespace: %w", err)
				return
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				errc <- fmt.Errorf("entering network namespace %s: %w", netnsPath, err)
				return
			}
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// runnerStatus waits for the runner's word: "ok" once libkrun is
// configured, or why it failed.
func (d *Driver) runnerStatus(ctx context.Context, id string, r *os.File) error {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	timer := time.NewTimer(runnerStartLimit)
	defer timer.Stop()
	select {
	case res := <-ch:
		switch {
		case res.line == "ok":
			return nil
		case strings.HasPrefix(res.line, "error: "):
			return errors.New(strings.TrimPrefix(res.line, "error: "))
		}
		return fmt.Errorf("the runner ended before the VM booted: %s", d.runnerLogTail(id))
	case <-ctx.Done():
		r.SetReadDeadline(time.Unix(1, 0))
		return ctx.Err()
	case <-timer.C:
		r.SetReadDeadline(time.Unix(1, 0))
		return fmt.Errorf("the runner did not configure the VM within %s: %s", runnerStartLimit, d.runnerLogTail(id))
	}
}

// runnerLogTail is the end of runner.log, for error messages.
func (d *Driver) runnerLogTail(id string) string {
	b, _ := os.ReadFile(d.RunnerLogPath(id))
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	if s == "" {
		return "it wrote nothing (see " + d.RunnerLogPath(id) + ")"
	}
	return s
}

// signalMain asks the agent to pass SIGTERM to the main command.
func signalMain(ctx context.Context, socket string) error {
	return agent.SignalMain(ctx, socket, syscall.SIGTERM)
}
