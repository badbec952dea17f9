package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestAllocator(t *testing.T, dir string, slots uint32) *idAllocator {
	t.Helper()
	return newIDAllocator(dir, DefaultHostID, DefaultHostID+7, slots*SlotSize)
}

func mkSandboxDir(t *testing.T, dir, id string) string {
	t.Helper()
	p := filepath.Join(dir, id)
	must(t, os.MkdirAll(p, 0o700))
	return p
}

func TestIDAllocator(t *testing.T) {
	dir := t.TempDir()
	a := newTestAllocator(t, dir, 3) // shared + 2 sandbox slots
	got := map[string]sandboxIDs{}
	for _, id := range []string{"a", "b"} {
		ids, err := a.get(id, mkSandboxDir(t, dir, id), false)
		must(t, err)
		got[id] = ids
	}
	if got["a"].Slot == got["b"].Slot || got["a"].Slot == 0 || got["b"].Slot == 0 {
		t.Fatalf("slots %+v", got)
	}
	for id, ids := range got {
		wantUID := DefaultHostID + ids.Slot*SlotSize
		if ids.UID != wantUID || ids.Owner != wantUID || ids.GID != wantUID+7 || ids.OwnerGID != wantUID+7 || ids.Size != SlotSize || ids.Shared {
			t.Errorf("%s: %+v, want uid %d", id, ids, wantUID)
		}
	}
	t.Run("same record again", func(t *testing.T) {
		ids, err := a.get("a", filepath.Join(dir, "a"), true)
		must(t, err)
		if ids != got["a"] {
			t.Errorf("second get = %+v, want %+v", ids, got["a"])
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		_, err := a.get("c", mkSandboxDir(t, dir, "c"), false)
		if err == nil || !strings.Contains(err.Error(), "--uid-size") {
			t.Fatalf("third sandbox in 2 slots: %v, want an error naming --uid-size", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "c", idsFile)); err == nil {
			t.Errorf("a refused allocation left a record")
		}
	})
	t.Run("restart", func(t *testing.T) {
		// A new allocator (msbd restarted) finds both slots taken.
		b := newTestAllocator(t, dir, 3)
		if _, err := b.get("c", filepath.Join(dir, "c"), false); err == nil {
			t.Fatal("after a restart, a taken slot was handed out again")
		}
		ids, err := b.get("b", filepath.Join(dir, "b"), false)
		must(t, err)
		if ids != got["b"] {
			t.Errorf("after restart b = %+v, want %+v", ids, got["b"])
		}
	})
	t.Run("release", func(t *testing.T) {
		must(t, os.RemoveAll(filepath.Join(dir, "a")))
		a.release("a")
		ids, err := a.get("c", filepath.Join(dir, "c"), false)
		must(t, err)
		if ids.Slot != got["a"].Slot {
			t.Errorf("c got slot %d, want a's freed slot %d", ids.Slot, got["a"].Slot)
		}
	})
}

func TestIDAllocatorShared(t *testing.T) {
	dir := t.TempDir()
	t.Run("one slot: everyone shares it", func(t *testing.T) {
		a := newTestAllocator(t, dir, 1)
		if a.perSandbox() {
			t.Fatal("perSandbox with one slot")
		}
		for _, id := range []string{"x", "y"} {
			ids, err := a.get(id, mkSandboxDir(t, dir, id), false)
			must(t, err)
			if !ids.Shared || ids.Slot != 0 || ids.UID != DefaultHostID || ids.Owner != DefaultHostID {
				t.Errorf("%s: %+v, want the shared range", id, ids)
			}
		}
	})
	t.Run("fallback keeps an owner of its own", func(t *testing.T) {
		d2 := t.TempDir()
		a := newTestAllocator(t, d2, 3)
		ids, err := a.get("z", mkSandboxDir(t, d2, "z"), true)
		must(t, err)
		if !ids.Shared || ids.UID != DefaultHostID || ids.Slot == 0 || ids.Owner != DefaultHostID+ids.Slot*SlotSize {
			t.Errorf("%+v: want the shared range and an owner of its own", ids)
		}
	})
}
