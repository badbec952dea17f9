package krun

import (
	"os"
	"testing"

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
	drivertest.Run(t, conformanceHarness(t, f.Library, f.KVMDevice, "realboot", 256<<20, 128))
}
