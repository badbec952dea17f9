package main

import (
	"log/slog"
	"os"
	"runtime"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun"
)

// The hidden runner: "msbd krun-runner ID" becomes one sandbox's VMM (see
// krun.RunnerMain). msbd starts it; users never do.
func init() {
	subcommands[krun.RunnerSubcommand] = krun.RunnerMain
	if len(os.Args) > 1 && os.Args[1] == krun.RunnerSubcommand {
		// The runner's work (no_new_privs, krun_start_enter) is done on
		// the main thread, the one /proc/PID shows: main stays on it.
		runtime.LockOSThread()
	}
}

// microVMDriver returns the krun driver when the probe found a usable KVM
// device and libkrun, else nil and why microVMs are unavailable. Its
// sandboxes take their host id ranges from ids, the container driver's
// allocator on the same span, so no microVM shares a slot with a container.
func microVMDriver(o options, stateDir string, uid, size uint32, ids *container.IDRanges, f krun.Finding, log *slog.Logger) (vmdriver.Driver, string) {
	if !f.Available() {
		return nil, f.Reason()
	}
	maxCPUs := runtime.NumCPU()
	if f.MaxVCPUs > 0 && f.MaxVCPUs < maxCPUs {
		maxCPUs = f.MaxVCPUs
	}
	d, err := krun.New(krun.Options{
		StateDir: stateDir, HostUID: uid, HostGID: uid, IDMapSize: size, IDRanges: ids,
		Library: f.Library, KVMDevice: f.KVMDevice,
		DefaultVCPUs: o.defaultVCPUs, MaxVCPUs: maxCPUs,
	})
	if err != nil {
		log.Error("microVM driver", "err", err)
		return nil, err.Error()
	}
	if why := d.SharedIDReason(); why != "" {
		log.Warn("microVM sandboxes share one host id range", "reason", why)
	}
	if f.Libkrunfw == "" {
		log.Warn("libkrunfw not found: libkrun will fail to boot guests until it is installed")
	}
	return d, ""
}
