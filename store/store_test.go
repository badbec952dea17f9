package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// newStore is storetest.Open for this package's own tests, which cannot import
// storetest (it imports store); it also returns the database path, for reopening.
func newStore(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "msb.db")
	opts = append([]Option{WithSecretKeyFile(filepath.Join(dir, "keys", "secrets.key"))}, opts...)
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func sandbox(ns, name, image string) *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: ns},
		Spec:     v1alpha1.SandboxSpec{Image: image},
	}
}

func rv(t testing.TB, obj v1alpha1.Object) int64 {
	t.Helper()
	n, err := strconv.ParseInt(obj.GetMetadata().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", obj.GetMetadata().ResourceVersion, err)
	}
	return n
}

func TestCRUD(t *testing.T) {
	s, _ := newStore(t)
	if got := s.Revision(); got != 1 {
		t.Fatalf("empty store revision = %d, want 1", got)
	}

	a := sandbox("", "a", "alpine")
	a.Status.Phase = v1alpha1.PhaseRunning // dropped: status is set with UpdateStatus
	if err := s.Create(a); err != nil {
		t.Fatal(err)
	}
	m := a.Metadata
	if m.Namespace != "default" || m.UID == "" || m.Generation != 1 || m.CreationTimestamp == nil || m.ResourceVersion != "2" {
		t.Fatalf("created metadata = %+v", m)
	}
	if a.APIVersion != v1alpha1.APIVersion || a.Kind != v1alpha1.KindSandbox || a.Status.Phase != "" {
		t.Fatalf("typemeta = %+v", a.TypeMeta)
	}
	if err := s.Create(sandbox("other", "b", "busybox")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(sandbox("default", "c", "busybox")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: "np"}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		op        func() error
		wantErr   error
		wantInMsg string
	}{
		{"create existing", func() error { return s.Create(sandbox("default", "a", "x")) }, ErrAlreadyExists, "sandbox default/a"},
		{"get missing", func() error { return s.Get("Sandbox", "default", "zz", &v1alpha1.Sandbox{}) }, ErrNotFound, "sandbox default/zz"},
		{"get wrong type", func() error { return s.Get("Sandbox", "default", "a", &v1alpha1.Secret{}) }, ErrInvalid, "into is"},
		{"get unknown kind", func() error { return s.Get("Pod", "default", "a", &v1alpha1.Sandbox{}) }, ErrInvalid, "Pod"},
		{"create empty name", func() error { return s.Create(sandbox("", "", "x")) }, ErrInvalid, "metadata.name is empty"},
		{"create slash", func() error { return s.Create(sandbox("", "a/b", "x")) }, ErrInvalid, "'/'"},
		{"create event", func() error { return s.Create(&v1alpha1.Event{Metadata: v1alpha1.ObjectMeta{Name: "e"}}) }, ErrInvalid, "RecordEvent"},
		{"delete missing", func() error { return s.Delete("Sandbox", "", "zz") }, ErrNotFound, "sandbox default/zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.wantInMsg)
			}
		})
	}

	var got v1alpha1.Sandbox
	if err := s.Get("sandbox", "", "a", &got); err != nil { // any kind name LookupKind knows
		t.Fatal(err)
	}
	if got.Metadata.UID != m.UID || got.Spec.Image != "alpine" || got.Kind != "Sandbox" || got.APIVersion != v1alpha1.APIVersion {
		t.Fatalf("get = %+v", got)
	}
	if !got.Metadata.CreationTimestamp.Equal(*m.CreationTimestamp) {
		t.Fatalf("creationTimestamp %v != %v", got.Metadata.CreationTimestamp, m.CreationTimestamp)
	}

	names := func(objs []v1alpha1.Object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.GetMetadata().Namespace+"/"+o.GetMetadata().Name)
		}
		return out
	}
	all, rev, err := s.List("Sandbox", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"default/a", "default/c", "other/b"}; !slices.Equal(names(all), want) || rev != s.Revision() {
		t.Fatalf("list all = %v @%d, want %v @%d", names(all), rev, want, s.Revision())
	}
	def, _, err := s.List("Sandbox", "default")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"default/a", "default/c"}; !slices.Equal(names(def), want) {
		t.Fatalf("list default = %v, want %v", names(def), want)
	}
	if all[0].GetTypeMeta().Kind != "Sandbox" {
		t.Fatalf("listed object has no kind: %+v", all[0].GetTypeMeta())
	}
	none, _, err := s.List("Sandbox", "nowhere")
	if err != nil || len(none) != 0 {
		t.Fatalf("list empty namespace = %v, %v", none, err)
	}

	if err := s.Delete("Sandbox", "", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Get("Sandbox", "", "a", &got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestResourceVersionMonotonic(t *testing.T) {
	s, _ := newStore(t)
	last := s.Revision()
	check := func(obj v1alpha1.Object) {
		t.Helper()
		r := rv(t, obj)
		if r <= last || r != s.Revision() {
			t.Fatalf("resourceVersion %d after %d (store at %d)", r, last, s.Revision())
		}
		last = r
	}
	for i := range 5 {
		sb := sandbox("", fmt.Sprint("sb", i), "alpine")
		if err := s.Create(sb); err != nil {
			t.Fatal(err)
		}
		check(sb)
		sb.Spec.Image = "busybox"
		if err := s.Update(sb); err != nil {
			t.Fatal(err)
		}
		check(sb)
		sb.Status.Phase = v1alpha1.PhaseRunning
		if err := s.UpdateStatus(sb); err != nil {
			t.Fatal(err)
		}
		check(sb)
	}
}

func TestUpdateGeneration(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*v1alpha1.Sandbox)
		wantGen    int64
		wantWrite  bool
		wantImage  string
		wantLabels map[string]string
	}{
		{"nothing", func(*v1alpha1.Sandbox) {}, 1, false, "alpine", nil},
		{"label", func(sb *v1alpha1.Sandbox) { sb.Metadata.Labels = map[string]string{"app": "x"} }, 1, true, "alpine", map[string]string{"app": "x"}},
		{"annotation", func(sb *v1alpha1.Sandbox) { sb.Metadata.Annotations = map[string]string{"a": "b"} }, 1, true, "alpine", nil},
		{"finalizer", func(sb *v1alpha1.Sandbox) { sb.Metadata.Finalizers = []string{"f"} }, 1, true, "alpine", nil},
		{"spec", func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "busybox" }, 2, true, "busybox", nil},
		{"status is ignored", func(sb *v1alpha1.Sandbox) { sb.Status.Phase = v1alpha1.PhaseFailed }, 1, false, "alpine", nil},
		{"server fields are ignored", func(sb *v1alpha1.Sandbox) { sb.Metadata.UID = "x"; sb.Metadata.Generation = 9 }, 1, false, "alpine", nil},
		{"empty vs nil labels", func(sb *v1alpha1.Sandbox) { sb.Metadata.Labels = map[string]string{} }, 1, false, "alpine", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			sb := sandbox("", "a", "alpine")
			if err := s.Create(sb); err != nil {
				t.Fatal(err)
			}
			uid, before := sb.Metadata.UID, rv(t, sb)
			tt.mutate(sb)
			if err := s.Update(sb); err != nil {
				t.Fatal(err)
			}
			var got v1alpha1.Sandbox
			if err := s.Get("Sandbox", "", "a", &got); err != nil {
				t.Fatal(err)
			}
			if got.Metadata.Generation != tt.wantGen || got.Spec.Image != tt.wantImage || got.Metadata.UID != uid || got.Status.Phase != "" {
				t.Fatalf("stored = gen %d image %q uid %q phase %q", got.Metadata.Generation, got.Spec.Image, got.Metadata.UID, got.Status.Phase)
			}
			if tt.wantLabels != nil && got.Metadata.Labels["app"] != tt.wantLabels["app"] {
				t.Fatalf("labels = %v", got.Metadata.Labels)
			}
			if wrote := rv(t, &got) != before; wrote != tt.wantWrite {
				t.Fatalf("wrote = %v (rv %d → %d), want %v", wrote, before, rv(t, &got), tt.wantWrite)
			}
			if sb.Metadata.ResourceVersion != got.Metadata.ResourceVersion || sb.Metadata.UID != uid || sb.Status.Phase != "" {
				t.Fatalf("obj not refreshed in place: %+v", sb.Metadata)
			}
		})
	}
}

func TestUpdateStatus(t *testing.T) {
	s, _ := newStore(t)
	sb := sandbox("", "a", "alpine")
	if err := s.Create(sb); err != nil {
		t.Fatal(err)
	}
	sb.Spec.Image = "ignored"
	sb.Metadata.Labels = map[string]string{"ignored": "yes"}
	sb.Status = v1alpha1.SandboxStatus{Phase: v1alpha1.PhaseRunning, ObservedGeneration: 1}
	if err := s.UpdateStatus(sb); err != nil {
		t.Fatal(err)
	}
	if sb.Spec.Image != "alpine" || sb.Metadata.Labels != nil || sb.Metadata.Generation != 1 || sb.Status.Phase != v1alpha1.PhaseRunning {
		t.Fatalf("after UpdateStatus: %+v", sb)
	}
	r := rv(t, sb)
	if err := s.UpdateStatus(sb); err != nil { // unchanged: no write
		t.Fatal(err)
	}
	if rv(t, sb) != r || s.Revision() != r {
		t.Fatalf("unchanged status wrote: rv %d → %d", r, rv(t, sb))
	}
	stale := *sb
	stale.Metadata.ResourceVersion = "1"
	stale.Status.Phase = v1alpha1.PhaseFailed
	if err := s.UpdateStatus(&stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale UpdateStatus: %v", err)
	}
}

func TestStaleResourceVersion(t *testing.T) {
	s, _ := newStore(t)
	sb := sandbox("", "x", "alpine")
	if err := s.Create(sb); err != nil {
		t.Fatal(err)
	}
	old := *sb
	sb.Spec.Image = "busybox"
	if err := s.Update(sb); err != nil {
		t.Fatal(err)
	}
	old.Spec.Image = "nginx"
	err := s.Update(&old)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	want := fmt.Sprintf("sandbox default/x: resourceVersion %s is stale (now %s)", old.Metadata.ResourceVersion, sb.Metadata.ResourceVersion)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	old.Metadata.ResourceVersion = ""
	if err := s.Update(&old); !errors.Is(err, ErrConflict) {
		t.Fatalf("update without resourceVersion: %v", err)
	}
}

// Every goroutine does read-modify-write with retries on conflict; no
// increment may be lost.
func TestConcurrentConflictingUpdates(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Create(sandbox("", "counter", "alpine")); err != nil {
		t.Fatal(err)
	}
	const workers, increments = 8, 10
	var wg sync.WaitGroup
	var conflicts sync.Map
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for range increments {
				for attempt := 0; ; attempt++ {
					var sb v1alpha1.Sandbox
					if err := s.Get("Sandbox", "", "counter", &sb); err != nil {
						errs <- err
						return
					}
					sb.Spec.Resources.PIDs++
					err := s.Update(&sb)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrConflict) {
						errs <- err
						return
					}
					conflicts.Store(w, true)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var sb v1alpha1.Sandbox
	if err := s.Get("Sandbox", "", "counter", &sb); err != nil {
		t.Fatal(err)
	}
	if sb.Spec.Resources.PIDs != workers*increments || sb.Metadata.Generation != 1+workers*increments {
		t.Fatalf("pids = %d, generation = %d; want %d, %d", sb.Spec.Resources.PIDs, sb.Metadata.Generation, workers*increments, 1+workers*increments)
	}
	n := 0
	conflicts.Range(func(any, any) bool { n++; return true })
	t.Logf("%d of %d workers hit a conflict", n, workers)
}

func TestApply(t *testing.T) {
	s, _ := newStore(t)
	// An existing object with a finalizer and status, to see Apply keep them.
	pre := sandbox("", "keep", "alpine")
	pre.Metadata.Finalizers = []string{v1alpha1.FinalizerSandbox}
	if err := s.Create(pre); err != nil {
		t.Fatal(err)
	}
	pre.Status.Phase = v1alpha1.PhaseRunning
	if err := s.UpdateStatus(pre); err != nil {
		t.Fatal(err)
	}

	type want struct {
		action string
		gen    int64
	}
	steps := []struct {
		name    string
		objs    func() []v1alpha1.Object
		dryRun  bool
		want    []want
		written bool
	}{
		{
			name: "create",
			objs: func() []v1alpha1.Object {
				return []v1alpha1.Object{sandbox("", "a", "alpine"), &v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: "np"}}}
			},
			want:    []want{{ActionCreated, 1}, {ActionCreated, 1}},
			written: true,
		},
		{
			name:    "unchanged",
			objs:    func() []v1alpha1.Object { return []v1alpha1.Object{sandbox("", "a", "alpine")} },
			want:    []want{{ActionUnchanged, 1}},
			written: false,
		},
		{
			name: "labels only",
			objs: func() []v1alpha1.Object {
				sb := sandbox("", "a", "alpine")
				sb.Metadata.Labels = map[string]string{"app": "x"}
				return []v1alpha1.Object{sb}
			},
			want:    []want{{ActionConfigured, 1}},
			written: true,
		},
		{
			name: "dry run",
			objs: func() []v1alpha1.Object {
				return []v1alpha1.Object{sandbox("", "a", "busybox"), sandbox("", "new", "x")}
			},
			dryRun:  true,
			want:    []want{{ActionConfigured, 2}, {ActionCreated, 1}},
			written: false,
		},
		{
			name: "spec",
			objs: func() []v1alpha1.Object {
				sb := sandbox("", "a", "busybox")
				sb.Metadata.Labels = map[string]string{"app": "x"}
				return []v1alpha1.Object{sb}
			},
			want:    []want{{ActionConfigured, 2}},
			written: true,
		},
		{
			name:    "keeps finalizers and status",
			objs:    func() []v1alpha1.Object { return []v1alpha1.Object{sandbox("", "keep", "busybox")} },
			want:    []want{{ActionConfigured, 2}},
			written: true,
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := s.Revision()
			objs := st.objs()
			res, err := s.Apply(objs, st.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(st.want) {
				t.Fatalf("results = %+v", res)
			}
			for i, r := range res {
				m := objs[i].GetMetadata()
				if r.Action != st.want[i].action || r.Name != m.Name || r.Namespace != "default" || (!st.dryRun && r.Kind != objs[i].GetTypeMeta().Kind) {
					t.Fatalf("result %d = %+v, want %s", i, r, st.want[i].action)
				}
				if !st.dryRun && m.Generation != st.want[i].gen {
					t.Fatalf("%s generation = %d, want %d", m.Name, m.Generation, st.want[i].gen)
				}
			}
			if wrote := s.Revision() != before; wrote != st.written {
				t.Fatalf("wrote = %v (revision %d → %d), want %v", wrote, before, s.Revision(), st.written)
			}
		})
	}
	var keep v1alpha1.Sandbox
	if err := s.Get("Sandbox", "", "keep", &keep); err != nil {
		t.Fatal(err)
	}
	if keep.Status.Phase != v1alpha1.PhaseRunning || !slices.Equal(keep.Metadata.Finalizers, []string{v1alpha1.FinalizerSandbox}) ||
		keep.Metadata.UID != pre.Metadata.UID || !keep.Metadata.CreationTimestamp.Equal(*pre.Metadata.CreationTimestamp) || keep.Spec.Image != "busybox" {
		t.Fatalf("apply lost server fields: %+v", keep)
	}
	if err := s.Get("Sandbox", "", "new", &v1alpha1.Sandbox{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dry run created an object: %v", err)
	}

	t.Run("one failing object writes nothing", func(t *testing.T) {
		before := s.Revision()
		_, err := s.Apply([]v1alpha1.Object{sandbox("", "b", "alpine"), sandbox("", "a", "nginx"), sandbox("", "", "bad")}, false)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "object 3 of 3") {
			t.Fatalf("err = %v", err)
		}
		if s.Revision() != before {
			t.Fatalf("revision moved %d → %d", before, s.Revision())
		}
		if err := s.Get("Sandbox", "", "b", &v1alpha1.Sandbox{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("b exists after failed apply: %v", err)
		}
		var a v1alpha1.Sandbox
		if err := s.Get("Sandbox", "", "a", &a); err != nil || a.Spec.Image != "busybox" {
			t.Fatalf("a changed after failed apply: %v %q", err, a.Spec.Image)
		}
	})

	t.Run("being deleted", func(t *testing.T) {
		if err := s.Delete("Sandbox", "", "keep"); err != nil {
			t.Fatal(err)
		}
		before := s.Revision()
		_, err := s.Apply([]v1alpha1.Object{sandbox("", "c", "alpine"), sandbox("", "keep", "busybox")}, false)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "is being deleted") {
			t.Fatalf("err = %v", err)
		}
		if s.Revision() != before {
			t.Fatal("failed apply wrote")
		}
	})
}

func TestFinalizers(t *testing.T) {
	s, _ := newStore(t)
	sb := sandbox("", "f", "alpine")
	sb.Metadata.Finalizers = []string{v1alpha1.FinalizerSandbox, "other"}
	if err := s.Create(sb); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEvent(v1alpha1.ObjectReference{Kind: "Sandbox", Name: "f"}, "Normal", "Created", "created"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("Sandbox", "", "f"); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.Sandbox
	if err := s.Get("Sandbox", "", "f", &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.DeletionTimestamp == nil {
		t.Fatal("no deletionTimestamp after Delete with finalizers")
	}
	first := *got.Metadata.DeletionTimestamp
	r := rv(t, &got)
	if err := s.Delete("Sandbox", "", "f"); err != nil { // again: no change
		t.Fatal(err)
	}
	if err := s.Get("Sandbox", "", "f", &got); err != nil || !got.Metadata.DeletionTimestamp.Equal(first) || rv(t, &got) != r {
		t.Fatalf("second Delete changed the object: %v %+v", err, got.Metadata)
	}

	got.Metadata.Finalizers = []string{"other"}
	if err := s.Update(&got); err != nil {
		t.Fatal(err)
	}
	if err := s.Get("Sandbox", "", "f", &v1alpha1.Sandbox{}); err != nil {
		t.Fatalf("removed with a finalizer left: %v", err)
	}
	got.Metadata.Finalizers = nil
	if err := s.Update(&got); err != nil {
		t.Fatal(err)
	}
	if err := s.Get("Sandbox", "", "f", &v1alpha1.Sandbox{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("object still there after its last finalizer went: %v", err)
	}
	if evs, err := s.Events("", nil); err != nil || len(evs) != 0 {
		t.Fatalf("events of a removed object remain: %v %v", evs, err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path, key := filepath.Join(dir, "msb.db"), filepath.Join(dir, "k")
	s, err := Open(path, WithSecretKeyFile(key))
	if err != nil {
		t.Fatal(err)
	}
	sb := sandbox("", "a", "alpine")
	if err := s.Create(sb); err != nil {
		t.Fatal(err)
	}
	sec := &v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "s"}, Spec: v1alpha1.SecretSpec{StringData: map[string]string{"k": "v"}}}
	if err := s.Create(sec); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordEvent(v1alpha1.ObjectReference{Kind: "Sandbox", Name: "a"}, "Normal", "Created", "hi"); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(sandbox("", "late", "x")); err == nil {
		t.Fatal("write after Close succeeded")
	}

	s, err = Open(path, WithSecretKeyFile(key))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Revision() != rev {
		t.Fatalf("revision after reopen = %d, want %d", s.Revision(), rev)
	}
	var got v1alpha1.Sandbox
	if err := s.Get("Sandbox", "", "a", &got); err != nil || got.Metadata.UID != sb.Metadata.UID {
		t.Fatalf("get after reopen: %v %+v", err, got.Metadata)
	}
	var gs v1alpha1.Secret
	if err := s.Get("Secret", "", "s", &gs); err != nil || gs.Spec.StringData["k"] != "v" {
		t.Fatalf("secret after reopen: %v %v", err, gs.Spec.StringData)
	}
	if evs, err := s.Events("default", nil); err != nil || len(evs) != 1 {
		t.Fatalf("events after reopen: %v %v", evs, err)
	}
	b := sandbox("", "b", "x")
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	if rv(t, b) != rev+1 {
		t.Fatalf("revision did not continue: %d after %d", rv(t, b), rev)
	}
}

func TestSecondOpenFails(t *testing.T) {
	_, path := newStore(t)
	s2, err := Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a database in use succeeded")
	}
	// It gave up on bbolt's lock timeout rather than waiting for the lock for
	// ever (bbolt returns ErrTimeout only when a timeout was set). How long that
	// takes is not checked: timings belong in benchmarks.
	if !errors.Is(err, bolt.ErrTimeout) {
		t.Fatalf("err = %v, want it to wrap bbolt's ErrTimeout", err)
	}
	if want := "another msbd is using " + path; !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to say %q", err, want)
	}
}

// The instance ID is set once and kept by the file: reopening (or a copy of
// the file) has the same one, another database another.
func TestInstanceID(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	id := a.InstanceID()
	if len(id) != 32 {
		t.Fatalf("instance id %q", id)
	}
	a.Close()
	a, err = Open(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.InstanceID() != id {
		t.Fatalf("instance id changed on reopen: %q → %q", id, a.InstanceID())
	}
	b, err := Open(filepath.Join(dir, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.InstanceID() == id {
		t.Fatal("two databases share an instance id")
	}
}
