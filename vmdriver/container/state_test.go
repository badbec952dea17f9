package container

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
)

// TestFastStateAgreesWithRunc checks that reading runc's state.json and /proc
// gives what `runc state` says, for a created, a running and a stopped container.
func TestFastStateAgreesWithRunc(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("exec sleep 1000")
	must(t, f.d.Create(ctx, spec))
	check := func(want vmdriver.Status) {
		t.Helper()
		fast, ok := f.d.fastState(spec.ID)
		if !ok {
			t.Fatalf("fastState gave up on a %s container", want)
		}
		out, err := f.d.runc(ctx, "", "state", spec.ID)
		must(t, err)
		slow, err := parseRuncState(spec.ID, out)
		must(t, err)
		if fast.Status != slow.Status || fast.Status != want {
			t.Fatalf("fast status %q, runc status %q, want %q", fast.Status, slow.Status, want)
		}
		if want != vmdriver.StatusStopped && fast.PID != slow.PID {
			t.Fatalf("fast pid %d, runc pid %d", fast.PID, slow.PID)
		}
	}
	// Start's two halves, so the created state can be looked at.
	id := spec.ID
	must(t, f.d.prepare(spec))
	must(t, f.d.inStartNS(spec, func() error { return f.d.launch(ctx, id, "create") }))
	pidFile := f.d.pidFile(id)
	check(vmdriver.StatusCreated)
	b, err := os.ReadFile(pidFile)
	must(t, err)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	must(t, f.d.finishStart(ctx, id, pid, true))
	check(vmdriver.StatusRunning)
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second))
	check(vmdriver.StatusStopped)
}
