package drivertest

import (
	"fmt"
	"sync/atomic"
	"testing"

	"msb.dev/msb/vmdriver"
)

// TestFakeConformance holds the Fake to the suite every backend passes. The
// fake runs no commands: Exit ends one where the suite's would end by
// itself; it has no agent (no Exec) and no state outside the process (no
// Reopen), so those subtests skip.
func TestFakeConformance(t *testing.T) {
	var n atomic.Int64
	Run(t, Harness{
		New: func(t *testing.T) vmdriver.Driver {
			d := NewFake("fake", vmdriver.IsolationContainer)
			d.Dir = t.TempDir()
			return d
		},
		NewSpec: func(t *testing.T, args ...string) vmdriver.Spec {
			return vmdriver.Spec{ID: fmt.Sprintf("fake-%d", n.Add(1)), Args: args}
		},
		Exit: func(t *testing.T, d vmdriver.Driver, id string, code int) {
			if err := d.(*Fake).Exit(id, code); err != nil {
				t.Fatal(err)
			}
		},
	})
}
