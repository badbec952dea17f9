package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// maxEventsPerObject bounds the events kept about one object; the oldest go first.
const maxEventsPerObject = 64

var eventInfo = v1alpha1.KindInfo{
	Kind: v1alpha1.KindEvent, Singular: "event", Plural: "events",
	New: func() v1alpha1.Object { return &v1alpha1.Event{} },
}

func decodeEvent(raw []byte) (*v1alpha1.Event, error) {
	ev := &v1alpha1.Event{}
	if err := json.Unmarshal(raw, ev); err != nil {
		return nil, fmt.Errorf("decode stored event: %w", err)
	}
	ev.APIVersion, ev.Kind = v1alpha1.APIVersion, v1alpha1.KindEvent
	return ev, nil
}

// eventsIn decodes the events of one involved object (bucket may be nil).
func eventsIn(bkt *bolt.Bucket) ([]*v1alpha1.Event, error) {
	var out []*v1alpha1.Event
	if bkt == nil {
		return nil, nil
	}
	err := bkt.ForEach(func(_, v []byte) error {
		if v == nil {
			return nil
		}
		ev, err := decodeEvent(v)
		if err == nil {
			out = append(out, ev)
		}
		return err
	})
	return out, err
}

// forEachInvolved calls fn with the events bucket of every involved object
// in namespace ("" = all namespaces).
func forEachInvolved(tx *bolt.Tx, namespace string, fn func(bkt *bolt.Bucket) error) error {
	perNS := func(nsb *bolt.Bucket) error {
		return forEachBucket(nsb, func(_ []byte, kb *bolt.Bucket) error {
			return forEachBucket(kb, func(_ []byte, b *bolt.Bucket) error { return fn(b) })
		})
	}
	if namespace != "" {
		return perNS(getEventsNamespaceBucket(tx, namespace))
	}
	return forEachBucket(getEventsRootBucket(tx), func(_ []byte, nsb *bolt.Bucket) error { return perNS(nsb) })
}

// listEvents returns the events in namespace ("" = all), about ref when not nil.
func listEvents(tx *bolt.Tx, namespace string, ref *v1alpha1.ObjectReference) ([]*v1alpha1.Event, error) {
	if ref != nil {
		return eventsIn(getEventsBucket(tx, defaultNS(ref.Namespace), ref.Kind, ref.Name))
	}
	var out []*v1alpha1.Event
	err := forEachInvolved(tx, namespace, func(bkt *bolt.Bucket) error {
		evs, err := eventsIn(bkt)
		out = append(out, evs...)
		return err
	})
	return out, err
}

// findEvent finds an event by its name in namespace.
func findEvent(tx *bolt.Tx, namespace, name string) (*v1alpha1.Event, error) {
	var found *v1alpha1.Event
	err := forEachInvolved(tx, namespace, func(bkt *bolt.Bucket) error {
		if v := bkt.Get([]byte(name)); v != nil && found == nil {
			ev, err := decodeEvent(v)
			found = ev
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("event %s/%s: %w", namespace, name, ErrNotFound)
	}
	return found, nil
}

func sortEventsByName(evs []*v1alpha1.Event) {
	slices.SortFunc(evs, func(a, b *v1alpha1.Event) int {
		if c := strings.Compare(a.Metadata.Namespace, b.Metadata.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Metadata.Name, b.Metadata.Name)
	})
}

func sortEventsByTime(evs []*v1alpha1.Event) {
	slices.SortStableFunc(evs, func(a, b *v1alpha1.Event) int {
		if c := a.FirstSeen.Compare(b.FirstSeen); c != 0 {
			return c
		}
		return strings.Compare(a.Metadata.Name, b.Metadata.Name)
	})
}

// putEvent writes ev into bkt at the next revision and logs it as typ.
func (t *txn) putEvent(bkt *bolt.Bucket, ev *v1alpha1.Event, typ string) error {
	rev := t.next()
	ev.Metadata.ResourceVersion = formatRev(rev)
	ev.APIVersion, ev.Kind = v1alpha1.APIVersion, v1alpha1.KindEvent
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := bkt.Put([]byte(ev.Metadata.Name), raw); err != nil {
		return err
	}
	return t.log(rev, typ, v1alpha1.KindEvent, v1alpha1.Key(v1alpha1.KindEvent, ev.Metadata.Namespace, ev.Metadata.Name), raw)
}

// dropEvent removes ev from bkt at the next revision (a DELETED change).
func (t *txn) dropEvent(bkt *bolt.Bucket, ev *v1alpha1.Event) error {
	rev := t.next()
	ev.Metadata.ResourceVersion = formatRev(rev)
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := bkt.Delete([]byte(ev.Metadata.Name)); err != nil {
		return err
	}
	return t.log(rev, Deleted, v1alpha1.KindEvent, v1alpha1.Key(v1alpha1.KindEvent, ev.Metadata.Namespace, ev.Metadata.Name), raw)
}

// removeEventsAbout drops every event about one object, oldest first.
func (t *txn) removeEventsAbout(namespace, kind, name string) error {
	bkt := getEventsBucket(t.tx, namespace, kind, name)
	if bkt == nil {
		return nil
	}
	evs, err := eventsIn(bkt)
	if err != nil {
		return err
	}
	sortEventsByTime(evs)
	for _, ev := range evs {
		if err := t.dropEvent(bkt, ev); err != nil {
			return err
		}
	}
	return getEventsNamespaceBucket(t.tx, namespace).Bucket([]byte(kind)).DeleteBucket([]byte(name))
}

// deleteEvent removes one event by name.
func (t *txn) deleteEvent(namespace, name string) error {
	var bkt *bolt.Bucket
	var ev *v1alpha1.Event
	err := forEachInvolved(t.tx, namespace, func(b *bolt.Bucket) error {
		if v := b.Get([]byte(name)); v != nil && ev == nil {
			var err error
			ev, err = decodeEvent(v)
			bkt = b
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ev == nil {
		return fmt.Errorf("event %s/%s: %w", namespace, name, ErrNotFound)
	}
	return t.dropEvent(bkt, ev)
}

// RecordEvent records that something happened to the object ref points at,
// Kubernetes style. When an event about the same object (kind, namespace,
// name and uid) with the same type, reason and message exists, the most
// recent such one gets Count+1 and a new LastSeen; otherwise a new Event
// named "<object name>.<hex nanoseconds>" is created in the object's
// namespace. At most 64 events are kept per object (the least recently seen
// are dropped, each a DELETED change).
// Events are objects of kind Event: List("Event", ns), Get and Watch see them.
func (s *Store) RecordEvent(ref v1alpha1.ObjectReference, eventType, reason, message string) error {
	ev := EventRecord{Ref: ref, Type: eventType, Reason: reason, Message: message}
	if err := ev.check(); err != nil {
		return err
	}
	return s.write(func(t *txn) error { return t.recordEvent(ev) })
}

// EventRecord is one event for RecordEvents: what RecordEvent takes.
type EventRecord struct {
	Ref                   v1alpha1.ObjectReference
	Type, Reason, Message string
}

// check validates ev and fills its defaults.
func (ev *EventRecord) check() error {
	ev.Ref.Namespace = defaultNS(ev.Ref.Namespace)
	if ev.Ref.Kind == "" || ev.Ref.Name == "" {
		return fmt.Errorf("record event %q: the involved object needs a kind and a name: %w", ev.Reason, ErrInvalid)
	}
	if err := checkName(eventInfo, ev.Ref.Namespace, ev.Ref.Name); err != nil {
		return err
	}
	if strings.ContainsAny(ev.Ref.Kind, "/\x00") {
		return fmt.Errorf("record event %q: bad kind %q: %w", ev.Reason, ev.Ref.Kind, ErrInvalid)
	}
	if ev.Type == "" {
		ev.Type = v1alpha1.EventNormal
	}
	return nil
}

// RecordEvents records evs as RecordEvent does, in order, in one durable
// write: a recorder with many events pending (a thousand sandboxes
// starting or deleted at once) pays one disk sync for all of them, not
// one each. An invalid event is left out and reported in the returned
// error; the others are recorded.
func (s *Store) RecordEvents(evs []EventRecord) error {
	var bad []error
	ok := make([]EventRecord, 0, len(evs))
	for _, ev := range evs {
		if err := ev.check(); err != nil {
			bad = append(bad, err)
			continue
		}
		ok = append(ok, ev)
	}
	if len(ok) > 0 {
		if err := s.write(func(t *txn) error {
			for _, ev := range ok {
				if err := t.recordEvent(ev); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return errors.Join(bad...)
}

// recordEvent records one checked event in t (see RecordEvent).
func (t *txn) recordEvent(e EventRecord) error {
	ref, eventType, reason, message := e.Ref, e.Type, e.Reason, e.Message
	bkt, err := createEventsBucket(t.tx, ref.Namespace, ref.Kind, ref.Name)
	if err != nil {
		return err
	}
	evs, err := eventsIn(bkt)
	if err != nil {
		return err
	}
	ts := now()
	var match *v1alpha1.Event
	for _, ev := range evs {
		if ev.InvolvedObject == ref && ev.Type == eventType && ev.Reason == reason && ev.Message == message &&
			(match == nil || ev.LastSeen.After(match.LastSeen)) {
			match = ev
		}
	}
	if match != nil {
		match.Count++
		match.LastSeen = ts
		return t.putEvent(bkt, match, Modified)
	}
	name := fmt.Sprintf("%s.%x", ref.Name, ts.UnixNano())
	for i := 1; bkt.Get([]byte(name)) != nil; i++ {
		name = fmt.Sprintf("%s.%x", ref.Name, ts.UnixNano()+int64(i))
	}
	ev := &v1alpha1.Event{
		Metadata: v1alpha1.ObjectMeta{
			Name: name, Namespace: ref.Namespace, UID: newUID(),
			Generation: 1, CreationTimestamp: &ts,
		},
		InvolvedObject: ref,
		Type:           eventType,
		Reason:         reason,
		Message:        message,
		Count:          1,
		FirstSeen:      ts,
		LastSeen:       ts,
	}
	if err := t.putEvent(bkt, ev, Added); err != nil {
		return err
	}
	evs = append(evs, ev)
	if len(evs) <= maxEventsPerObject {
		return nil
	}
	slices.SortStableFunc(evs, func(a, b *v1alpha1.Event) int { return a.LastSeen.Compare(b.LastSeen) })
	for _, old := range evs[:len(evs)-maxEventsPerObject] {
		if err := t.dropEvent(bkt, old); err != nil {
			return err
		}
	}
	return nil
}

// Events returns events oldest first (by FirstSeen): those about ref when it
// is not nil (in ref's namespace, "default" when empty; namespace is then
// unused; a ref UID also filters out events about an earlier object of that
// name), else all in namespace ("" = all namespaces).
func (s *Store) Events(namespace string, ref *v1alpha1.ObjectReference) ([]v1alpha1.Event, error) {
	var evs []*v1alpha1.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		evs, err = listEvents(tx, namespace, ref)
		return err
	})
	if err != nil {
		return nil, err
	}
	if ref != nil && ref.UID != "" {
		evs = slices.DeleteFunc(evs, func(ev *v1alpha1.Event) bool { return ev.InvolvedObject.UID != "" && ev.InvolvedObject.UID != ref.UID })
	}
	sortEventsByTime(evs)
	out := make([]v1alpha1.Event, len(evs))
	for i, ev := range evs {
		out[i] = *ev
	}
	return out, nil
}
