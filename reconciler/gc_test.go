package reconciler

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store/storetest"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/drivertest"
)

// Orphans are looked for in every driver: a sandbox any driver holds whose
// object is gone is removed there; one the store knows is kept wherever it is.
func TestOrphanCollectionCoversEveryDriver(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	a, b := drivertest.NewFake("a", "container"), drivertest.NewFake("b", "microvm")
	sb := &v1alpha1.Sandbox{Metadata: v1alpha1.ObjectMeta{Name: "kept", Namespace: "default"}, Spec: v1alpha1.SandboxSpec{Image: "x"}}
	if err := st.Create(sb); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d  *drivertest.Fake
		id string
	}{{a, sb.Metadata.UID}, {a, "orphan-a"}, {b, "orphan-b"}} {
		if err := c.d.Create(ctx, vmdriver.Spec{ID: c.id}); err != nil {
			t.Fatal(err)
		}
		if err := c.d.Start(ctx, c.id); err != nil {
			t.Fatal(err)
		}
	}
	// A third driver that cannot list does not keep the others' orphans.
	broken := drivertest.NewFake("broken", "container")
	broken.SetError("List", errors.New("runc state is corrupt"))
	dir := t.TempDir()
	gc := NewOrphanCollector(dir, st, vmdriver.NewSet("", a, b, broken), slog.New(slog.DiscardHandler))
	if err := gc.CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if ids, _ := a.List(ctx); !slices.Equal(ids, []string{sb.Metadata.UID}) {
		t.Errorf("driver a holds %q, want only the known sandbox", ids)
	}
	if ids, _ := b.List(ctx); len(ids) != 0 {
		t.Errorf("driver b holds %q, want its orphan removed", ids)
	}
	if _, err := os.Stat(filepath.Join(dir, FenceFile)); err != nil {
		t.Errorf("no fence written: %v", err)
	}
}

// A store that is not the one the sandboxes came from (another instance)
// keeps them all, in every driver.
func TestOrphanCollectionHeldForAnotherStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := drivertest.NewFake("a", "container"), drivertest.NewFake("b", "microvm")
	drivers := vmdriver.NewSet("", a, b)
	first := storetest.Open(t)
	if err := NewOrphanCollector(dir, first, drivers, slog.New(slog.DiscardHandler)).CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*drivertest.Fake{a, b} {
		if err := d.Create(ctx, vmdriver.Spec{ID: "from-" + d.Name()}); err != nil {
			t.Fatal(err)
		}
	}
	other := storetest.Open(t)
	if err := NewOrphanCollector(dir, other, drivers, slog.New(slog.DiscardHandler)).CollectOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*drivertest.Fake{a, b} {
		if ids, _ := d.List(ctx); len(ids) != 1 {
			t.Errorf("driver %s holds %q, want its sandbox kept", d.Name(), ids)
		}
	}
}
