package container

import (
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"msb.dev/msb/vmdriver"
)

// agentInSandbox is where the agent binary appears; the host agent/ dir is /.msb.
const (
	agentMountDir = "/.msb"
	agentBinary   = "/.msb/msb-agent"
	cpuPeriod     = 100000 // µs, the CFS default
)

// capabilities is Docker's default set minus NET_RAW and MKNOD.
var capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_AUDIT_WRITE",
	"CAP_SETFCAP",
}

// maskedPaths and readonlyPaths are Docker's defaults.
var (
	maskedPaths = []string{
		"/proc/asound",
		"/proc/acpi",
		"/proc/interrupts",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus",
		"/proc/fs",
		"/proc/irq",
		"/proc/sys",
		"/proc/sysrq-trigger",
	}
)

// ociSpec builds the runtime spec of one sandbox. rootfs is the mounted overlay.
//
// The sandbox joins the user namespace msbd made for it (userns.go), and
// runc creates the other namespaces inside it. A network namespace given in
// spec.NetNSPath belongs to the host's user namespace, which runc could no
// longer enter after joining the sandbox's: runc is started inside it
// instead (see launch) and the spec names no network namespace, so the
// sandbox stays in runc's.
func (d *Driver) ociSpec(spec vmdriver.Spec, rootfs string, ids sandboxIDs) (*specs.Spec, error) {
	hostname := spec.Hostname
	if hostname == "" {
		// Never leave the host's name visible in the new UTS namespace.
		hostname = spec.ID
		if len(hostname) > 63 {
			hostname = hostname[:63]
		}
	}
	caps := append([]string(nil), capabilities...)
	s := &specs.Spec{
		Version: "1.0.2",
		Root:    &specs.Root{Path: rootfs, Readonly: false},
		Process: &specs.Process{
			Terminal: false,
			User:     specs.User{UID: 0, GID: 0},
			Args:     []string{agentBinary, "init"},
			// The agent's own environment (the sandbox's command gets the
			// spec's). One P: the agent idles in every sandbox, only moving
			// bytes between pipes and its socket, and a P costs a thread and
			// per-P caches: its PSS drops from 1.36 to 1.13 MiB. Set from
			// the start: runtime.GOMAXPROCS(1) in the agent comes after the
			// runtime made two Ps, and saves nothing.
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOMAXPROCS=1"},
			Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			NoNewPrivileges: true,
		},
		Hostname: hostname,
		Mounts:   d.mounts(spec),
		Linux: &specs.Linux{
			// runc 1.1 wants the maps of a joined namespace too (the same).
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.UID, Size: ids.Size}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.GID, Size: ids.Size}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.UserNamespace, Path: d.userNSFile(spec.ID)},
				{Type: specs.CgroupNamespace},
			},
			CgroupsPath: d.cgroupsPath(spec.ID),
			Resources:   resources(spec),
			// Host mount events never reach the sandbox and its mounts never
			// reach the host.
			RootfsPropagation: "rprivate",
			MaskedPaths:       maskedPaths,
			ReadonlyPaths:     readonlyPaths,
		},
	}
	if err := d.execOnlyAgentMount(s); err != nil {
		return nil, err
	}
	if spec.NetNSPath == "" {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	if d.setsRlimits {
		s.Process.Rlimits = []specs.POSIXRlimit{nofileLimit()}
	}
	if d.seccompFilter != nil {
		// The agent installs the filter compiled once in New, read from the
		// descriptor Start passes; runc would compile the profile with
		// libseccomp at every start (~10ms here).
		s.Process.Args = append(s.Process.Args, "--seccomp-fd", "3")
		withWorkloadCgroup(s, 4)
		return s, nil
	}
	withWorkloadCgroup(s, 3)
	sc, err := seccompProfile()
	if err != nil {
		return nil, err
	}
	s.Linux.Seccomp = sc
	return s, nil
}

// seccompProfile is Docker's default seccomp profile for the capabilities
// sandboxes get, limited to the native syscall ABI: the default profile also
// admits the 32-bit (x86, x32) entry points for old binaries, which untrusted
// code does not need and which are extra kernel attack surface.
func seccompProfile() (*specs.LinuxSeccomp, error) {
	sc, err := seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding:  capabilities,
		Effective: capabilities,
		Permitted: capabilities,
	}}})
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	if native := nativeArch(); native != "" {
		sc.Architectures = []specs.Arch{native}
	}
	return sc, nil
}

// nativeArch is the seccomp architecture of this build's GOARCH.
func nativeArch() specs.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return specs.ArchX86_64
	case "arm64":
		return specs.ArchAARCH64
	case "riscv64":
		return specs.ArchRISCV64
	case "s390x":
		return specs.ArchS390X
	case "ppc64le":
		return specs.ArchPPC64LE
	}
	return ""
}

func resources(spec vmdriver.Spec) *specs.LinuxResources {
	r := &specs.LinuxResources{
		// Deny every device, then runc appends its default allow list
		// (null, zero, full, random, urandom, tty, ptmx, pts).
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if spec.MemoryBytes > 0 {
		limit := spec.MemoryBytes
		swap := spec.MemoryBytes // memory+swap = limit: no swap
		r.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap}
	}
	if spec.MilliCPUs > 0 {
		quota := spec.MilliCPUs * cpuPeriod / 1000
		if quota < 1000 {
			quota = 1000 // the kernel's minimum is 1ms
		}
		period := uint64(cpuPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if spec.PIDs > 0 {
		pids := spec.PIDs
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return r
}

func (d *Driver) mounts(spec vmdriver.Spec) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if spec.NetNSPath != "" {
		// runc cannot mount this sysfs: the start did (see mountSysfsHere).
		m[len(m)-1] = specs.Mount{Destination: "/sys", Type: "bind", Source: d.sysfsDir(spec.ID), Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
	}
	for i, v := range spec.Mounts {
		// The staging mount Start makes from the host path it opened
		// without following links (see volumes.go); bind, not rbind: it has
		// nothing mounted below it.
		opts := []string{"bind", "nosuid", "nodev"}
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		m = append(m, specs.Mount{Destination: filepath.Clean(v.Path), Type: "bind", Source: d.volumeStage(spec.ID, i), Options: opts})
	}
	// After the volumes (validateFiles keeps them apart anyway), before the agent.
	m = append(m, d.fileMounts(spec)...)
	// Last, so a volume can never cover the agent.
	m = append(m,
		specs.Mount{Destination: agentMountDir, Type: "bind", Source: d.agentMountPoint(spec.ID), Options: []string{"bind", "nosuid", "nodev", "noexec"}},
		specs.Mount{Destination: agentBinary, Type: "bind", Source: spec.AgentPath, Options: []string{"bind", "ro", "nosuid", "nodev"}},
	)
	return m
}

// canSetRlimits reports whether msbd holds CAP_SYS_RESOURCE. runc sets the
// sandbox's rlimits with prlimit(2) from outside, which over a user
// namespace owned by another uid takes that capability; without it (a root
// confined by its container, say) the sandbox inherits msbd's limits.
func canSetRlimits() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}

// nofileLimit is soft 1024, hard 524288 (as systemd and Docker), capped at
// msbd's own hard limit: in a user namespace runc cannot raise it.
func nofileLimit() specs.POSIXRlimit {
	l := specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: 524288, Soft: 1024}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err == nil {
		l.Hard = min(l.Hard, cur.Max)
		l.Soft = min(l.Soft, l.Hard)
	}
	return l
}
