package reconciler

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store"
)

// batchSink counts the writes a Recorder makes and keeps the events in the
// order written.
type batchSink struct {
	mu     sync.Mutex
	writes int
	got    []string
	gate   chan struct{} // the first write waits on it, so events pile up
}

func (s *batchSink) RecordEvent(ref v1alpha1.ObjectReference, typ, reason, message string) error {
	return s.RecordEvents([]store.EventRecord{{Ref: ref, Type: typ, Reason: reason, Message: message}})
}

func (s *batchSink) RecordEvents(evs []store.EventRecord) error {
	if s.gate != nil {
		<-s.gate
		s.gate = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	for _, ev := range evs {
		s.got = append(s.got, ev.Message)
	}
	return nil
}

// Events pending together are written together, in order, and Flush
// returns once every event recorded before it is written.
func TestRecorderBatchesPendingEvents(t *testing.T) {
	sink := &batchSink{gate: make(chan struct{})}
	r := NewRecorder(sink, slog.New(slog.DiscardHandler))
	defer r.Close()
	ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: "default", Name: "a"}
	const n = 500
	r.Event(ref, v1alpha1.EventNormal, "R", "0") // held at the gate
	for i := 1; i < n; i++ {
		r.Event(ref, v1alpha1.EventNormal, "R", fmt.Sprint(i)) // fits the recorder's buffer
	}
	close(sink.gate) // the rest arrived while the first was being written
	r.Flush()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.got) != n {
		t.Fatalf("%d events written before Flush returned, want %d", len(sink.got), n)
	}
	for i, m := range sink.got {
		if m != fmt.Sprint(i) {
			t.Fatalf("event %d is %q: out of order", i, m)
		}
	}
	if want := 2 + n/maxEventBatch; sink.writes > want {
		t.Errorf("%d writes for %d events, want at most %d: pending events were not batched", sink.writes, n, want)
	}
}
