//go:build cgo

package container

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// The helper must be the C one: a single thread, no Go runtime started.
func TestHolderRunsWithoutGoRuntime(t *testing.T) {
	requireRunc(t)
	h, err := startHolder(0, 0, false, nil, &idMaps{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop()
	if err := h.waitOK(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nThreads:\t1\n") {
		t.Errorf("helper has more than one thread (the Go runtime started):\n%s", b)
	}
}

// Its errors reach msbd as the Go helper's did.
func TestHolderErrors(t *testing.T) {
	requireRunc(t)
	for _, tc := range []struct{ arg, want string }{
		{"max_inotify_instances", `bad limit "max_inotify_instances"`},
		{"../x=1", `bad limit "../x=1"`},
		{"no_such_limit=1", "user.no_such_limit=1: No such file or directory"},
	} {
		h, err := startHolder(0, 0, false, []string{tc.arg}, &idMaps{})
		if err != nil {
			t.Fatal(err)
		}
		err = h.waitOK()
		h.stop()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.arg, err, tc.want)
		}
	}
}

// BenchmarkMakeUserNS: one sandbox user namespace (helper started, maps
// written, limits lowered, namespace bind-mounted), as every new sandbox
// makes one.
func BenchmarkMakeUserNS(b *testing.B) {
	requireRunc(b)
	dir := tempDir(b)
	const owner = DefaultHostID + 5*SlotSize
	limits := sandboxUserLimits()
	for i := 0; b.Loop(); i++ {
		target := fmt.Sprintf("%s/ns%d", dir, i)
		must(b, makeUserNS(target, owner, owner, idMap{0, owner, SlotSize}, idMap{0, owner, SlotSize}, limits))
		must(b, unmountAll(target))
	}
}
