package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// WatchEvent is one change: Type is "ADDED", "MODIFIED" or "DELETED";
// Object is the object after the change (for DELETED, its last state), with
// Secret values in plain text as Get returns them.
type WatchEvent struct {
	Type     string
	Kind     string
	Revision int64
	Object   v1alpha1.Object
}

// Watch streams every change with a revision greater than fromRevision, in
// revision order with no gaps and no duplicates: first those already in the
// changelog, then live ones. Each change has its own revision (Revision, and
// the object's resourceVersion). fromRevision 0 means "from now" (only changes
// committed after Watch returns); to follow a List without missing anything,
// pass the revision List returned (an empty store is at revision 1, so this
// also works before the first write).
//
// If fromRevision is older than the changelog keeps (the last 10000
// revisions), Watch fails with ErrGone: list again and watch from there. A
// fromRevision beyond the current revision waits for it.
//
// Writers never wait for watchers: each watcher has its own queue. A watcher
// that falls more than 10000 changes behind (on top of the backlog it asked
// for) has its channel closed, as if its
// context ended; the consumer should list again and watch from the list's
// revision. The channel is also closed when ctx is done or the store closes.
func (s *Store) Watch(ctx context.Context, fromRevision int64) (<-chan WatchEvent, error) {
	if fromRevision < 0 {
		return nil, fmt.Errorf("watch from revision %d: %w", fromRevision, ErrInvalid)
	}
	// Holding writeMu means no commit can land between reading the
	// changelog and registering: nothing is missed or seen twice.
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	w := &watcher{
		s:      s,
		ctx:    ctx,
		ch:     make(chan WatchEvent),
		signal: make(chan struct{}, 1),
		limit:  s.watchQueueLimit,
		after:  fromRevision,
	}
	if fromRevision > 0 {
		err := s.db.View(func(tx *bolt.Tx) error {
			if compacted := readMeta(tx, metaKeyCompactedRevision); fromRevision < compacted {
				return fmt.Errorf("watch from revision %d: the changelog starts at %d (list again and watch from the list's revision): %w", fromRevision, compacted+1, ErrGone)
			}
			bkt := getChangelogBucket(tx)
			if bkt == nil {
				return nil
			}
			c := bkt.Cursor()
			for k, v := c.Seek(encodeInt(fromRevision + 1)); k != nil; k, v = c.Next() {
				var ch change
				if err := json.Unmarshal(v, &ch); err != nil {
					return fmt.Errorf("read changelog at revision %d: %w", decodeInt(k), err)
				}
				ch.rev = decodeInt(k)
				w.queue = append(w.queue, ch)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	w.limit += len(w.queue) // the backlog asked for does not count against the limit
	s.watchMu.Lock()
	s.watchers[w] = struct{}{}
	s.watchMu.Unlock()
	go w.run()
	return w.ch, nil
}

// publish hands committed changes to every watcher. Called with writeMu held,
// right after the commit; it never blocks.
func (s *Store) publish(changes []change) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		w.push(changes)
	}
}

type watcher struct {
	s      *Store
	ctx    context.Context
	ch     chan WatchEvent
	signal chan struct{} // capacity 1: "the queue has something"
	limit  int
	after  int64 // changes at or below this revision were seen by the caller

	mu       sync.Mutex
	queue    []change
	overflow bool
}

func (w *watcher) push(changes []change) {
	// A watch from a revision not yet reached starts after it.
	for len(changes) > 0 && changes[0].rev <= w.after {
		changes = changes[1:]
	}
	if len(changes) == 0 {
		return
	}
	w.mu.Lock()
	if !w.overflow {
		if len(w.queue)+len(changes) > w.limit {
			w.overflow = true
			w.queue = nil
		} else {
			w.queue = append(w.queue, changes...)
		}
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// take removes up to 256 queued changes.
func (w *watcher) take() (batch []change, overflow bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(len(w.queue), 256)
	batch = append([]change(nil), w.queue[:n]...)
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil // let the backing array go
	}
	return batch, w.overflow
}

func (w *watcher) run() {
	defer func() {
		w.s.watchMu.Lock()
		delete(w.s.watchers, w)
		w.s.watchMu.Unlock()
		close(w.ch)
	}()
	for {
		batch, overflow := w.take()
		if overflow {
			slog.Warn("store: watcher fell too far behind; closing its channel", "limit", w.limit)
			return
		}
		if len(batch) == 0 {
			select {
			case <-w.signal:
				continue
			case <-w.ctx.Done():
				return
			case <-w.s.done:
				return
			}
		}
		for _, c := range batch {
			ev, err := w.s.watchEvent(c)
			if err != nil {
				slog.Error("store: cannot decode a change for a watcher; closing its channel", "revision", c.rev, "key", c.Key, "err", err)
				return
			}
			select {
			case w.ch <- ev:
			case <-w.ctx.Done():
				return
			case <-w.s.done:
				return
			}
		}
	}
}

func (s *Store) watchEvent(c change) (WatchEvent, error) {
	ev := WatchEvent{Type: c.Type, Kind: c.Kind, Revision: c.rev}
	if c.Kind == v1alpha1.KindEvent {
		obj, err := decodeEvent(c.Object)
		ev.Object = obj
		return ev, err
	}
	info, err := kindInfo(c.Kind)
	if err != nil {
		return ev, err
	}
	ev.Object, err = s.decode(info, c.Object)
	return ev, err
}
