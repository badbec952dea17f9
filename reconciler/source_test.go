package reconciler

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store/storetest"
)

// The source hands the queue every Sandbox when it starts, each change of a
// Sandbox, and for a change of a Secret every Sandbox of its namespace.
func TestSourceFeedsQueue(t *testing.T) {
	st := storetest.Open(t)
	mk := func(ns, name string) {
		t.Helper()
		sb := &v1alpha1.Sandbox{Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: ns}, Spec: v1alpha1.SandboxSpec{Image: "x"}}
		if err := st.Create(sb); err != nil {
			t.Fatal(err)
		}
	}
	mk("default", "a")
	mk("other", "b")
	q := NewQueue(time.Millisecond, time.Second)
	src := &Source{Store: st, Kind: v1alpha1.KindSandbox, Queue: q, Resync: time.Hour, Log: slog.New(slog.DiscardHandler),
		Related: map[string]func(v1alpha1.Object) []string{v1alpha1.KindSecret: SandboxesInNamespace(st)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; q.ShutDown() })

	take := func(what string, want ...string) {
		t.Helper()
		var got []string
		for range want {
			k, ok := q.Get()
			if !ok {
				t.Fatalf("%s: queue shut down", what)
			}
			q.Done(k)
			got = append(got, k)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: keys %q, want %q", what, got, want)
		}
	}
	take("initial list", v1alpha1.Key(v1alpha1.KindSandbox, "default", "a"), v1alpha1.Key(v1alpha1.KindSandbox, "other", "b"))
	mk("default", "c")
	take("a new sandbox", v1alpha1.Key(v1alpha1.KindSandbox, "default", "c"))
	sec := &v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "s", Namespace: "default"}, Spec: v1alpha1.SecretSpec{StringData: map[string]string{"k": "v"}}}
	if err := st.Create(sec); err != nil {
		t.Fatal(err)
	}
	take("a secret", v1alpha1.Key(v1alpha1.KindSandbox, "default", "a"), v1alpha1.Key(v1alpha1.KindSandbox, "default", "c"))
	if n := q.Len(); n != 0 {
		t.Errorf("%d more keys queued, want none", n)
	}
}
