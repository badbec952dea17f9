package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/drivertest"
)

// fenceStore is a FenceStore whose revision a test sets, as a restore does.
type fenceStore struct {
	mu   sync.Mutex
	id   string
	rev  int64
	objs []v1alpha1.Object
	n    int
}

func (s *fenceStore) List(kind, ns string) ([]v1alpha1.Object, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.objs), s.rev, nil
}
func (s *fenceStore) Revision() int64    { s.mu.Lock(); defer s.mu.Unlock(); return s.rev }
func (s *fenceStore) InstanceID() string { s.mu.Lock(); defer s.mu.Unlock(); return s.id }
func (s *fenceStore) RotateInstanceID() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.id = fmt.Sprintf("instance-%d", s.n)
	return nil
}

type eventLog struct {
	mu  sync.Mutex
	evs []string
}

func (l *eventLog) RecordEvent(ref v1alpha1.ObjectReference, typ, reason, msg string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, fmt.Sprintf("%s %s/%s %s %s", typ, ref.Namespace, ref.Name, reason, msg))
	return nil
}

func sandboxObj(name, uid string) *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: "default", UID: uid}}
}

// A whole state directory restored from a backup (fence included) keeps
// the sandboxes created after the backup: their markers are newer than the
// store. msbd rotates the instance ID, holds the orphans (also after more
// restarts), says so in a Warning event naming the sandbox, and removes them
// only once the operator removes the fence.
func TestRestoreOfStateDirKeepsNewerSandboxes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	drv := drivertest.NewFake("a", "container")
	drivers := vmdriver.NewSet("", drv)
	st := &fenceStore{id: "instance-0", rev: 10}
	log := slog.New(slog.DiscardHandler)
	old := sandboxObj("old", "uid-old")
	st.objs = []v1alpha1.Object{old}

	c := NewOrphanCollector(dir, st, drivers, log)
	if err := c.BeforeCreate(old); err != nil {
		t.Fatal(err)
	}
	mustGC(t, drv.Create(ctx, vmdriver.Spec{ID: "uid-old"}))
	if err := c.CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	backup, err := os.ReadFile(filepath.Join(dir, FenceFile))
	if err != nil {
		t.Fatal(err)
	}

	// After the backup: a new sandbox at revision 20.
	newer := sandboxObj("new", "uid-new")
	st.mu.Lock()
	st.rev, st.objs = 20, append(st.objs, newer)
	st.mu.Unlock()
	if err := c.BeforeCreate(newer); err != nil {
		t.Fatal(err)
	}
	mustGC(t, drv.Create(ctx, vmdriver.Spec{ID: "uid-new"}))
	if err := c.CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	idBefore := st.InstanceID()

	// The restore: the fence and the database as they were.
	mustGC(t, os.WriteFile(filepath.Join(dir, FenceFile), backup, 0o600))
	st.mu.Lock()
	st.rev, st.objs = 10, []v1alpha1.Object{old}
	st.mu.Unlock()
	events := &eventLog{}
	for restart := range 2 {
		c = NewOrphanCollector(dir, st, drivers, log)
		c.Events = events
		if !strings.Contains(c.Held(), "restored from a backup") || !strings.Contains(c.Held(), "default/new") {
			t.Fatalf("restart %d: held = %q, want a restore naming sandbox new", restart, c.Held())
		}
		if err := c.CollectOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if ids, _ := drv.List(ctx); !slices.Equal(ids, []string{"uid-new", "uid-old"}) {
			t.Fatalf("restart %d: driver holds %q, want the newer sandbox kept", restart, ids)
		}
		// The store passing the marker's revision changes nothing.
		st.mu.Lock()
		st.rev = 30
		st.mu.Unlock()
	}
	if st.InstanceID() == idBefore {
		t.Error("the restored database kept its instance ID")
	}
	events.mu.Lock()
	if len(events.evs) == 0 || !strings.Contains(events.evs[0], "Warning default/new "+ReasonOrphansHeld) || !strings.Contains(events.evs[0], FenceFile) {
		t.Errorf("events %q, want a Warning about sandbox new that says how to accept", events.evs)
	}
	events.mu.Unlock()

	// The operator accepts the store: the orphan and its marker go.
	mustGC(t, os.Remove(filepath.Join(dir, FenceFile)))
	c = NewOrphanCollector(dir, st, drivers, log)
	if c.Held() != "" {
		t.Fatalf("held after the fence was removed: %q", c.Held())
	}
	if err := c.CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if ids, _ := drv.List(ctx); !slices.Equal(ids, []string{"uid-old"}) {
		t.Errorf("driver holds %q after the store was accepted, want the orphan removed", ids)
	}
	if _, err := os.Stat(filepath.Join(dir, MarkerDir, "uid-new")); !os.IsNotExist(err) {
		t.Errorf("the removed orphan's marker is left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MarkerDir, "uid-old")); err != nil {
		t.Errorf("a known sandbox's marker was removed: %v", err)
	}
}

// Without a restore, a sandbox deleted while msbd was down (its marker no
// newer than the store) is an ordinary orphan: removed, with its marker.
func TestDeletedSandboxIsNoRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	drv := drivertest.NewFake("a", "container")
	drivers := vmdriver.NewSet("", drv)
	st := &fenceStore{id: "instance-0", rev: 10}
	log := slog.New(slog.DiscardHandler)
	gone := sandboxObj("gone", "uid-gone")
	st.objs = []v1alpha1.Object{gone}
	c := NewOrphanCollector(dir, st, drivers, log)
	mustGC(t, c.BeforeCreate(gone))
	mustGC(t, drv.Create(ctx, vmdriver.Spec{ID: "uid-gone"}))
	mustGC(t, c.CollectOnce(ctx))

	st.mu.Lock()
	st.rev, st.objs = 12, nil // deleted while msbd was down
	st.mu.Unlock()
	c = NewOrphanCollector(dir, st, drivers, log)
	if c.Held() != "" {
		t.Fatalf("held: %q", c.Held())
	}
	mustGC(t, c.CollectOnce(ctx))
	if ids, _ := drv.List(ctx); len(ids) != 0 {
		t.Errorf("driver holds %q, want the orphan removed", ids)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, MarkerDir)); len(ents) != 0 {
		t.Errorf("markers left: %v", ents)
	}
}

func mustGC(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The fence is written once for the sandboxes of one apply: each start
// needs it only to cover its own object's revision.
func TestFenceWrittenOncePerApply(t *testing.T) {
	dir := t.TempDir()
	st := &fenceStore{id: "instance-0", rev: 10}
	c := NewOrphanCollector(dir, st, vmdriver.NewSet("", drivertest.NewFake("a", "container")), slog.New(slog.DiscardHandler))
	read := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, FenceFile))
		return string(b)
	}
	for i := range 20 {
		sb := sandboxObj(fmt.Sprintf("s%d", i), fmt.Sprintf("uid-%d", i))
		sb.Metadata.ResourceVersion = fmt.Sprint(5 + i%5) // all from the apply at 10
		mustGC(t, c.BeforeCreate(sb))
		if i == 0 {
			if !strings.Contains(read(), `"revision":10`) {
				t.Fatalf("fence %s, want revision 10", read())
			}
		}
		st.mu.Lock()
		st.rev++ // status writes move the store on
		st.mu.Unlock()
	}
	if !strings.Contains(read(), `"revision":10`) {
		t.Errorf("fence %s rewritten for sandboxes it already covered", read())
	}
	sb := sandboxObj("later", "uid-later")
	sb.Metadata.ResourceVersion = "25"
	mustGC(t, c.BeforeCreate(sb))
	if !strings.Contains(read(), `"revision":30`) {
		t.Errorf("fence %s, want it moved to the store's revision 30 for a newer sandbox", read())
	}
}
