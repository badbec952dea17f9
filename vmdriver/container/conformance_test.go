package container

import (
	"path/filepath"
	"testing"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/drivertest"
)

// TestConformance runs the drivertest suite against real runc with the real
// msb-agent and a busybox image: each subtest gets a driver on a state
// directory of its own; the image layers are shared.
func TestConformance(t *testing.T) {
	requireRunc(t)
	layers := busyboxLayers(t, tempDir(t))
	agentPath := agenttest.Build(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t *testing.T) vmdriver.Driver {
			d, err := New(Options{StateDir: filepath.Join(tempDir(t), "state")})
			must(t, err)
			return d
		},
		NewSpec: func(t *testing.T, args ...string) vmdriver.Spec {
			return vmdriver.Spec{
				ID:          randomID(),
				Hostname:    "conformance",
				Layers:      layers,
				AgentPath:   agentPath,
				Args:        args,
				Env:         []string{"PATH=/bin:/usr/bin", "HOME=/root"},
				MemoryBytes: 64 << 20,
				PIDs:        64,
			}
		},
		Exec: drivertest.AgentExec,
		Reopen: func(t *testing.T, d vmdriver.Driver) vmdriver.Driver {
			d2, err := New(d.(*Driver).opts)
			must(t, err)
			return d2
		},
	})
}
