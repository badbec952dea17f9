package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// recv reads n events or fails after a timeout.
func recv(t *testing.T, ch <-chan WatchEvent, n int) []WatchEvent {
	t.Helper()
	var out []WatchEvent
	timeout := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

// quiet checks that ch has nothing more to deliver, without waiting "a moment": it
// writes a marker Sandbox and requires the marker's ADDED to be the very next event.
// A watcher delivers in revision order from one queue, so an extra or repeated event
// would arrive before the marker. The marker is returned so a caller that tracks
// every revision can record it.
func quiet(t *testing.T, s *Store, ch <-chan WatchEvent) *v1alpha1.Sandbox {
	t.Helper()
	m := sandbox("", fmt.Sprint("quiet-", s.Revision()), "x")
	must(t, s.Create(m))
	if ev := recv(t, ch, 1)[0]; ev.Revision != rv(t, m) || ev.Type != Added || v1alpha1.KeyOf(ev.Object) != v1alpha1.KeyOf(m) {
		t.Fatalf("unexpected event %s %s rev %d; the next should have been the marker ADDED %s rev %d",
			ev.Type, v1alpha1.KeyOf(ev.Object), ev.Revision, v1alpha1.KeyOf(m), rv(t, m))
	}
	return m
}

type step struct{ typ, key string }

// history makes a fixed sequence of changes and returns what a watcher
// should see for each revision.
func history(t *testing.T, s *Store) map[int64]step {
	t.Helper()
	want := map[int64]step{}
	note := func(typ string, obj v1alpha1.Object) {
		want[rv(t, obj)] = step{typ, v1alpha1.KeyOf(obj)}
	}
	a := sandbox("", "a", "alpine")
	must(t, s.Create(a))
	note(Added, a)
	b := sandbox("", "b", "alpine")
	b.Metadata.Finalizers = []string{"f"}
	must(t, s.Create(b))
	note(Added, b)
	a.Spec.Image = "busybox"
	must(t, s.Update(a))
	note(Modified, a)
	a.Status.Phase = v1alpha1.PhaseRunning
	must(t, s.UpdateStatus(a))
	note(Modified, a)
	must(t, s.Delete("Sandbox", "", "b"))
	must(t, s.Get("Sandbox", "", "b", b))
	note(Modified, b)
	b.Metadata.Finalizers = nil
	must(t, s.Update(b))
	note(Deleted, b)
	must(t, s.Delete("Sandbox", "", "a"))
	want[s.Revision()] = step{Deleted, "Sandbox/default/a"}
	return want
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatchResume(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live, err := s.Watch(ctx, 0) // from now
	must(t, err)
	start := s.Revision()
	want := history(t, s)
	end := s.Revision()
	if int64(len(want)) != end-start {
		t.Fatalf("history made %d changes over revisions %d..%d", len(want), start, end)
	}

	check := func(t *testing.T, evs []WatchEvent, from int64) {
		t.Helper()
		for i, ev := range evs {
			wantRev := from + 1 + int64(i)
			w := want[wantRev]
			if ev.Revision != wantRev || ev.Type != w.typ || v1alpha1.KeyOf(ev.Object) != w.key || ev.Kind != "Sandbox" {
				t.Fatalf("event %d = %s %s rev %d, want %s %s rev %d", i, ev.Type, v1alpha1.KeyOf(ev.Object), ev.Revision, w.typ, w.key, wantRev)
			}
			if got := ev.Object.GetMetadata().ResourceVersion; got != fmt.Sprint(ev.Revision) {
				t.Fatalf("event rev %d carries resourceVersion %s", ev.Revision, got)
			}
		}
	}
	t.Run("from 0 sees only later changes", func(t *testing.T) {
		check(t, recv(t, live, int(end-start)), start)
		m := quiet(t, s, live)
		want[rv(t, m)] = step{Added, v1alpha1.KeyOf(m)}
	})
	for _, from := range []int64{start, start + 1, start + 3, end - 1, end} {
		t.Run(fmt.Sprint("from ", from), func(t *testing.T) {
			ch, err := s.Watch(ctx, from)
			must(t, err)
			check(t, recv(t, ch, int(s.Revision()-from)), from) // includes earlier subtests' live changes
			// And then live changes, still in order: the next event on both
			// watchers is this create and nothing else (so ch is quiet too).
			c := sandbox("", fmt.Sprint("c", from), "x")
			must(t, s.Create(c))
			want[rv(t, c)] = step{Added, v1alpha1.KeyOf(c)}
			if ev := recv(t, ch, 1)[0]; ev.Revision != rv(t, c) || ev.Type != Added {
				t.Fatalf("live event = %s rev %d, want ADDED rev %d", ev.Type, ev.Revision, rv(t, c))
			}
			// The earlier watcher sees the same live change.
			if ev := recv(t, live, 1)[0]; ev.Revision != rv(t, c) {
				t.Fatalf("from-0 watcher got rev %d, want %d", ev.Revision, rv(t, c))
			}
		})
	}
}

// Writers racing with a watcher: the watcher sees every revision exactly once, in order.
func TestWatchConcurrentWriters(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, s.Revision())
	must(t, err)
	from := s.Revision()
	const writers, each = 4, 25
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				if err := s.Create(sandbox("", fmt.Sprintf("w%d-%d", w, i), "x")); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range writers {
		must(t, <-done)
	}
	evs := recv(t, ch, writers*each)
	for i, ev := range evs {
		if ev.Revision != from+1+int64(i) {
			t.Fatalf("event %d has revision %d, want %d", i, ev.Revision, from+1+int64(i))
		}
	}
	quiet(t, s, ch)
}

func TestWatchGone(t *testing.T) {
	s, _ := newStore(t, withChangelogLimit(5))
	for i := range 10 {
		must(t, s.Create(sandbox("", fmt.Sprint("s", i), "x")))
	}
	// Revisions 2..11 were written; the last 5 (7..11) are kept.
	if _, err := s.Watch(context.Background(), 5); !errors.Is(err, ErrGone) {
		t.Fatalf("watch from trimmed revision: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, 6) // needs 7.. : all kept
	must(t, err)
	evs := recv(t, ch, 5)
	if evs[0].Revision != 7 || evs[4].Revision != 11 {
		t.Fatalf("resumed %d..%d, want 7..11", evs[0].Revision, evs[4].Revision)
	}
}

func TestWatchClose(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		s, _ := newStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := s.Watch(ctx, 0)
		must(t, err)
		cancel()
		waitClosed(t, ch)
		must(t, s.Create(sandbox("", "a", "x"))) // writers unaffected
	})
	t.Run("slow consumer", func(t *testing.T) {
		s, _ := newStore(t, withWatchQueueLimit(3))
		ch, err := s.Watch(context.Background(), 0)
		must(t, err)
		for i := range 10 { // never read: the writer must not block
			must(t, s.Create(sandbox("", fmt.Sprint("s", i), "x")))
		}
		waitClosed(t, ch)
	})
	t.Run("store closed", func(t *testing.T) {
		s, _ := newStore(t)
		ch, err := s.Watch(context.Background(), 0)
		must(t, err)
		must(t, s.Close())
		waitClosed(t, ch)
	})
}

// waitClosed drains ch until it is closed.
func waitClosed(t *testing.T, ch <-chan WatchEvent) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("watch channel not closed")
		}
	}
}

// A watch that starts while writers are busy: the seam between the changelog
// backlog and live changes has no gap and no duplicate.
func TestWatchSeamUnderLoad(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := s.Revision()
	const total = 200
	done := make(chan error, 1)
	busy := make(chan struct{}) // closed once a quarter of the writes are committed
	go func() {
		for i := range total {
			if err := s.Create(sandbox("", fmt.Sprint("s", i), "x")); err != nil {
				done <- err
				return
			}
			if i == total/4 {
				close(busy)
			}
		}
		done <- nil
	}()
	select {
	case <-busy:
	case err := <-done: // failed before a quarter
		must(t, err)
	}
	ch, err := s.Watch(ctx, from)
	must(t, err)
	must(t, <-done)
	evs := recv(t, ch, total)
	for i, ev := range evs {
		if ev.Revision != from+1+int64(i) {
			t.Fatalf("event %d has revision %d, want %d", i, ev.Revision, from+1+int64(i))
		}
	}
	quiet(t, s, ch)
}

// A watch from a revision not reached yet waits for it: the changes up to
// it (which the caller claims to have seen) are not delivered.
func TestWatchFromFutureRevision(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	from := s.Revision() + 2
	ch, err := s.Watch(ctx, from)
	must(t, err)
	var made []int64
	for i := range 4 {
		sb := sandbox("", fmt.Sprint("f", i), "x")
		must(t, s.Create(sb))
		made = append(made, rv(t, sb))
	}
	evs := recv(t, ch, 2)
	if evs[0].Revision != from+1 || evs[1].Revision != from+2 {
		t.Fatalf("watch from %d delivered revisions %d, %d; want %d, %d (made %v)", from, evs[0].Revision, evs[1].Revision, from+1, from+2, made)
	}
	quiet(t, s, ch)
}
