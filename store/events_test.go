package store

import (
	"context"
	"fmt"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
)

func TestEvents(t *testing.T) {
	s, _ := newStore(t)
	a := v1alpha1.ObjectReference{Kind: "Sandbox", Name: "a", UID: "u1"}
	b := v1alpha1.ObjectReference{Kind: "Sandbox", Namespace: "other", Name: "b"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, s.Revision())
	must(t, err)

	records := []struct {
		ref                   v1alpha1.ObjectReference
		typ, reason, message  string
		wantEvents, wantCount int // events about ref after, and Count of the last recorded
		wantWatch             string
	}{
		{a, "Normal", "Pulled", "pulled alpine", 1, 1, Added},
		{a, "Normal", "Pulled", "pulled alpine", 1, 2, Modified},
		{a, "Normal", "Started", "started", 2, 1, Added},
		{a, "Normal", "Pulled", "pulled alpine", 2, 3, Modified}, // the matching one, not the latest
		{a, "Warning", "Pulled", "pulled alpine", 3, 1, Added},   // type differs
		{b, "Normal", "Pulled", "pulled alpine", 1, 1, Added},    // other object
	}
	for i, r := range records {
		t.Run(fmt.Sprint(i, r.reason), func(t *testing.T) {
			must(t, s.RecordEvent(r.ref, r.typ, r.reason, r.message))
			ref := r.ref
			evs, err := s.Events("", &ref)
			must(t, err)
			if len(evs) != r.wantEvents {
				t.Fatalf("%d events, want %d", len(evs), r.wantEvents)
			}
			ev := recv(t, ch, 1)[0]
			e := ev.Object.(*v1alpha1.Event)
			if ev.Type != r.wantWatch || ev.Kind != "Event" || e.Count != int32(r.wantCount) || e.Reason != r.reason || e.Type != r.typ {
				t.Fatalf("watch: %s %+v", ev.Type, e)
			}
			wantNS := r.ref.Namespace
			if wantNS == "" {
				wantNS = "default"
			}
			if e.Metadata.Namespace != wantNS || e.InvolvedObject.Namespace != wantNS || e.Kind != "Event" {
				t.Fatalf("event namespace %q, involved %+v", e.Metadata.Namespace, e.InvolvedObject)
			}
		})
	}

	evs, err := s.Events("default", nil)
	must(t, err)
	if len(evs) != 3 {
		t.Fatalf("%d events in default, want 3", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].FirstSeen.Before(evs[i-1].FirstSeen) {
			t.Fatal("events not oldest first")
		}
	}
	if evs[0].Reason != "Pulled" || evs[0].Count != 3 || !evs[0].LastSeen.After(evs[0].FirstSeen) {
		t.Fatalf("deduplicated event = %+v", evs[0])
	}
	all, err := s.Events("", nil)
	must(t, err)
	if len(all) != 4 {
		t.Fatalf("%d events in all namespaces, want 4", len(all))
	}
	listed, _, err := s.List("Event", "default")
	must(t, err)
	if len(listed) != 3 || listed[0].GetTypeMeta().Kind != "Event" {
		t.Fatalf("List(Event) = %d objects", len(listed))
	}
	var got v1alpha1.Event
	must(t, s.Get("Event", "default", evs[1].Metadata.Name, &got))
	if got.Reason != evs[1].Reason {
		t.Fatalf("Get(Event) = %+v", got)
	}
	must(t, s.Delete("Event", "default", evs[1].Metadata.Name))
	if ev := recv(t, ch, 1)[0]; ev.Type != Deleted || ev.Object.GetMetadata().Name != evs[1].Metadata.Name {
		t.Fatalf("delete event: %s %s", ev.Type, ev.Object.GetMetadata().Name)
	}
}

func TestEventsBounded(t *testing.T) {
	s, _ := newStore(t)
	ref := v1alpha1.ObjectReference{Kind: "Sandbox", Name: "busy"}
	const n = maxEventsPerObject + 10
	for i := range n {
		must(t, s.RecordEvent(ref, "Normal", "Tick", fmt.Sprint("tick ", i)))
	}
	evs, err := s.Events("default", &ref)
	must(t, err)
	if len(evs) != maxEventsPerObject {
		t.Fatalf("%d events kept, want %d", len(evs), maxEventsPerObject)
	}
	if evs[0].Message != "tick 10" || evs[len(evs)-1].Message != fmt.Sprint("tick ", n-1) {
		t.Fatalf("kept %q..%q, want the newest", evs[0].Message, evs[len(evs)-1].Message)
	}

	// Removing the object removes its events.
	sb := sandbox("", "busy", "x")
	must(t, s.Create(sb))
	must(t, s.Delete("Sandbox", "", "busy"))
	if evs, err := s.Events("", nil); err != nil || len(evs) != 0 {
		t.Fatalf("after delete: %d events, %v", len(evs), err)
	}
}

// RecordEvents records a batch in order in one write, as RecordEvent would
// one by one (repeats count up), and leaves out an invalid event alone.
func TestRecordEventsBatch(t *testing.T) {
	s, _ := newStore(t)
	a := v1alpha1.ObjectReference{Kind: "Sandbox", Name: "a"}
	b := v1alpha1.ObjectReference{Kind: "Sandbox", Name: "b"}
	rev := s.Revision()
	err := s.RecordEvents([]EventRecord{
		{Ref: a, Reason: "Created", Message: "created"},
		{Ref: a, Reason: "Started", Message: "started"},
		{Ref: v1alpha1.ObjectReference{Kind: "Sandbox"}, Reason: "Bad"}, // no name
		{Ref: a, Reason: "Started", Message: "started"},
		{Ref: b, Type: "Warning", Reason: "Killing", Message: "stopping"},
	})
	if err == nil {
		t.Error("an event without an object's name was not reported")
	}
	evs, err := s.Events("", &a)
	must(t, err)
	if len(evs) != 2 || evs[0].Reason != "Created" || evs[1].Reason != "Started" || evs[1].Count != 2 || evs[0].Type != v1alpha1.EventNormal {
		t.Errorf("events about a: %+v; want Created, then Started counted twice", evs)
	}
	evs, err = s.Events("", &b)
	must(t, err)
	if len(evs) != 1 || evs[0].Type != "Warning" {
		t.Errorf("events about b: %+v", evs)
	}
	// Four changes (three adds, one count), at one revision step each.
	if got := s.Revision() - rev; got != 4 {
		t.Errorf("revision moved by %d, want 4", got)
	}
}
