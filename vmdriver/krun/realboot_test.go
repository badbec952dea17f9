package krun

import (
	"os"
	"path/filepath"
	"testing"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/drivertest"
)

// requiresMicroVM skips t, saying why, unless this host can boot a real
// microVM for the sandboxes' uids (one per sandbox): a KVM character device it may open
// read-write, libkrun with the symbols msb needs, and libkrunfw.
func requiresMicroVM(t testing.TB) Finding {
	t.Helper()
	f := Probe(os.Getenv("MSB_KRUN_LIB"), "")
	f.RequireAccessSpan(container.DefaultHostID, container.DefaultHostID, container.DefaultIDMapSize)
	switch {
	case !f.Available():
		t.Skip("no real microVMs here: " + f.Reason())
	case !f.KVMCharDevice:
		t.Skipf("no real microVMs here: %s is not a character device", f.KVMDevice)
	case f.Libkrunfw == "":
		t.Skip("no real microVMs here: libkrunfw not found (libkrun boots its kernel from it)")
	}
	return f
}

// TestRealBoot runs the conformance suite on real libkrun and KVM (set
// MSB_KRUN_LIB to try a libkrun outside the loader's search): every
// sandbox boots its own kernel, and the agent answers over vsock.
func TestRealBoot(t *testing.T) {
	requireRoot(t)
	f := requiresMicroVM(t)
	base := tempDir(t)
	layers := busyboxLayers(t, base)
	agentPath := agenttest.Build(t)
	self, err := os.Executable()
	must(t, err)
	drivertest.Run(t, drivertest.Harness{
		New: func(t *testing.T) vmdriver.Driver {
			d, err := New(Options{StateDir: filepath.Join(tempDir(t), "state"), Library: f.Library, KVMDevice: f.KVMDevice, RunnerPath: self})
			must(t, err)
			return d
		},
		NewSpec: func(t *testing.T, args ...string) vmdriver.Spec {
			return vmdriver.Spec{ID: randomID(), Hostname: "realboot", Layers: layers, AgentPath: agentPath, Args: args,
				Env: []string{"PATH=/bin:/usr/bin", "HOME=/root"}, MemoryBytes: 256 << 20, PIDs: 128}
		},
		Exec: drivertest.AgentExec,
		Reopen: func(t *testing.T, d vmdriver.Driver) vmdriver.Driver {
			d2, err := New(d.(*Driver).opts)
			must(t, err)
			return d2
		},
	})
}
