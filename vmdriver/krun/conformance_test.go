package krun

import (
	"os"
	"path/filepath"
	"testing"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/drivertest"
)

// TestConformance runs the drivertest suite against the krun driver with
// the stand-in libkrun, which runs the real msb-agent chrooted into the
// VM's root and serves it on the socket the vsock mapping names: exec,
// exit codes, stop, restart and adoption go the way they go with libkrun.
func TestConformance(t *testing.T) {
	requireRoot(t)
	si := newStandIn(t)
	drivertest.Run(t, conformanceHarness(t, si.lib, si.kvm, "conformance", 64<<20, 64))
}

// conformanceHarness is the drivertest harness of krun drivers on library
// lib and KVM device kvm, running busybox sandboxes with the real agent.
func conformanceHarness(t *testing.T, lib, kvm, hostname string, memory, pids int64) drivertest.Harness {
	layers := busyboxLayers(t, tempDir(t))
	agentPath := agenttest.Build(t)
	self, err := os.Executable()
	must(t, err)
	return drivertest.Harness{
		New: func(t *testing.T) vmdriver.Driver {
			d, err := New(Options{StateDir: filepath.Join(tempDir(t), "state"), Library: lib, KVMDevice: kvm, RunnerPath: self})
			must(t, err)
			return d
		},
		NewSpec: func(t *testing.T, args ...string) vmdriver.Spec {
			return vmdriver.Spec{ID: randomID(), Hostname: hostname, Layers: layers, AgentPath: agentPath, Args: args,
				Env: []string{"PATH=/bin:/usr/bin", "HOME=/root"}, MemoryBytes: memory, PIDs: pids}
		},
		Exec: drivertest.AgentExec,
		Reopen: func(t *testing.T, d vmdriver.Driver) vmdriver.Driver {
			d2, err := New(d.(*Driver).opts)
			must(t, err)
			return d2
		},
	}
}
