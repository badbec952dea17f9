package reconciler

import (
	"fmt"
	"log/slog"
	"sync"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store"
)

// EventSink stores events (implemented by *store.Store).
type EventSink interface {
	RecordEvent(ref v1alpha1.ObjectReference, eventType, reason, message string) error
}

// BatchEventSink stores several events in one durable write (implemented
// by *store.Store).
type BatchEventSink interface {
	RecordEvents(evs []store.EventRecord) error
}

// maxEventBatch bounds the events written in one store transaction.
const maxEventBatch = 256

// Recorder writes events for every controller. Each is a durable store
// write and a sandbox start records several, so they are written by one
// goroutine, in order, off the reconcile path; Flush waits for those recorded
// so far (a finalizer flushes before the object goes, so none outlives it).
type Recorder struct {
	sink EventSink
	log  *slog.Logger

	once sync.Once
	ch   chan pendingEvent
	done chan struct{}
}

type pendingEvent struct {
	ref                  v1alpha1.ObjectReference
	typ, reason, message string
	flushed              chan struct{} // a marker: closed when reached
}

// NewRecorder returns a recorder writing to sink; Close it after the
// controllers using it stopped.
func NewRecorder(sink EventSink, log *slog.Logger) *Recorder {
	r := &Recorder{sink: sink, log: log, ch: make(chan pendingEvent, 1024), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		batch := make([]pendingEvent, 0, maxEventBatch)
		for ev := range r.ch {
			// Take what else is pending, up to a flush marker, and write
			// it together: one disk sync for many events.
			batch = append(batch[:0], ev)
		drain:
			for len(batch) < maxEventBatch && ev.flushed == nil {
				select {
				case next, ok := <-r.ch:
					if !ok {
						break drain
					}
					batch, ev = append(batch, next), next
				default:
					break drain
				}
			}
			r.write(batch)
		}
	}()
	return r
}

// write records batch's events, in order, then closes its flush marker
// (only ever last).
func (r *Recorder) write(batch []pendingEvent) {
	var flushed chan struct{}
	if last := batch[len(batch)-1]; last.flushed != nil {
		flushed, batch = last.flushed, batch[:len(batch)-1]
	}
	if bs, ok := r.sink.(BatchEventSink); ok && len(batch) > 1 {
		recs := make([]store.EventRecord, len(batch))
		for i, ev := range batch {
			recs[i] = store.EventRecord{Ref: ev.ref, Type: ev.typ, Reason: ev.reason, Message: ev.message}
		}
		if err := bs.RecordEvents(recs); err != nil {
			r.log.Warn("recording events", "events", len(recs), "err", err)
		}
	} else {
		for _, ev := range batch {
			if err := r.sink.RecordEvent(ev.ref, ev.typ, ev.reason, ev.message); err != nil {
				r.log.Warn("recording event", "object", ev.ref.Name, "reason", ev.reason, "err", err)
			}
		}
	}
	if flushed != nil {
		close(flushed)
	}
}

// Event records an event about the object ref.
func (r *Recorder) Event(ref v1alpha1.ObjectReference, typ, reason, message string) {
	r.ch <- pendingEvent{ref: ref, typ: typ, reason: reason, message: message}
}

// Eventf records an event about obj with a formatted message.
func (r *Recorder) Eventf(obj v1alpha1.Object, typ, reason, format string, args ...any) {
	r.Event(RefOf(obj), typ, reason, fmt.Sprintf(format, args...))
}

// Flush waits until every event recorded so far is in the store.
func (r *Recorder) Flush() {
	ch := make(chan struct{})
	r.ch <- pendingEvent{flushed: ch}
	<-ch
}

// Close writes the events still pending; the recorder is unusable after.
func (r *Recorder) Close() {
	r.once.Do(func() { close(r.ch) })
	<-r.done
}

// RefOf names obj in an event.
func RefOf(obj v1alpha1.Object) v1alpha1.ObjectReference {
	m := obj.GetMetadata()
	ki, _ := v1alpha1.KindOf(obj)
	return v1alpha1.ObjectReference{Kind: ki.Kind, Namespace: m.Namespace, Name: m.Name, UID: m.UID}
}

// Getter reads one object (implemented by *store.Store).
type Getter interface {
	Get(kind, namespace, name string, into v1alpha1.Object) error
}

// PanicRecorder returns a Controller's OnPanic hook that leaves a Warning
// event (ReconcilePanic) on the object, so a crash in a reconcile is visible
// to users, not only in msbd's log. An object that is gone gets none: its
// events went with it.
func (r *Recorder) PanicRecorder(st Getter) PanicHandler {
	return func(key string, recovered any) {
		kind, ns, name, err := v1alpha1.SplitKey(key)
		if err != nil {
			return
		}
		ki, err := v1alpha1.LookupKind(kind)
		if err != nil {
			return
		}
		obj := ki.New()
		if err := st.Get(ki.Kind, ns, name, obj); err != nil {
			r.log.Error("internal error while reconciling an object that is gone", "key", key, "panic", fmt.Sprint(recovered))
			return
		}
		r.Event(RefOf(obj), v1alpha1.EventWarning, ReasonPanic, fmt.Sprintf("internal error while reconciling: %v (will retry)", recovered))
	}
}
