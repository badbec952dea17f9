package reconciler

import (
	"context"
	"log/slog"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store"
)

// Lister lists and watches the store (implemented by *store.Store).
type Lister interface {
	List(kind, namespace string) ([]v1alpha1.Object, int64, error)
	Watch(ctx context.Context, fromRevision int64) (<-chan store.WatchEvent, error)
}

// Source keeps one controller's queue fed from the store: every object of
// Kind when it starts (level-triggered: this is how running sandboxes are
// adopted after a restart), every change of Kind from the store's watch, the
// keys Related maps a change of another kind to, and everything again at each
// resync. Keys only say "look again"; the controller reads the object itself.
type Source struct {
	Store  Lister
	Kind   string
	Queue  *Queue
	Resync time.Duration
	// Related maps a change of another kind to keys of Kind that depend on
	// it (a Secret → the Sandboxes of its namespace).
	Related map[string]func(obj v1alpha1.Object) []string
	// OnResync, if set, runs after each resync's list (orphan collection).
	OnResync func(ctx context.Context)
	Log      *slog.Logger
}

// Run feeds the queue until ctx ends.
func (s *Source) Run(ctx context.Context) {
	tick := time.NewTicker(s.Resync)
	defer tick.Stop()
	for ctx.Err() == nil {
		objs, rev, err := s.Store.List(s.Kind, "")
		if err != nil {
			s.Log.Error("listing for the work queue", "kind", s.Kind, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for _, o := range objs {
			s.Queue.Add(v1alpha1.KeyOf(o))
		}
		s.watchFrom(ctx, rev, tick.C)
		if ctx.Err() == nil && s.OnResync != nil {
			s.OnResync(ctx)
		}
	}
}

// watchFrom feeds changes after rev until the stream ends or the next
// resync; its watch is cancelled on return so none is left behind.
func (s *Source) watchFrom(ctx context.Context, rev int64, resync <-chan time.Time) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Store.Watch(wctx, rev)
	if err != nil {
		s.Log.Warn("watching the store; listing again", "err", err)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync:
			return // list again: a resync
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if ev.Kind == s.Kind {
				s.Queue.Add(v1alpha1.KeyOf(ev.Object))
			} else if fn := s.Related[ev.Kind]; fn != nil {
				for _, k := range fn(ev.Object) {
					s.Queue.Add(k)
				}
			}
		}
	}
}

// SandboxesInNamespace maps an object to the keys of every Sandbox in its
// namespace: Sandboxes referencing a Secret wait for it and look again when
// it changes; a NetworkPolicy changes what they may reach.
func SandboxesInNamespace(st Lister) func(obj v1alpha1.Object) []string {
	return inNamespace(st, v1alpha1.KindSandbox)
}

// PoliciesInNamespace maps an object to the keys of every NetworkPolicy in
// its namespace: a Sandbox created, relabelled or deleted changes what they
// select.
func PoliciesInNamespace(st Lister) func(obj v1alpha1.Object) []string {
	return inNamespace(st, v1alpha1.KindNetworkPolicy)
}

// inNamespace maps an object to the keys of every object of kind in its
// namespace.
func inNamespace(st Lister, kind string) func(obj v1alpha1.Object) []string {
	return func(obj v1alpha1.Object) []string {
		objs, _, err := st.List(kind, obj.GetMetadata().Namespace)
		if err != nil {
			return nil
		}
		keys := make([]string, 0, len(objs))
		for _, o := range objs {
			keys = append(keys, v1alpha1.KeyOf(o))
		}
		return keys
	}
}
