package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// put writes r at the next revision and logs it as typ.
func (t *txn) put(r *record, typ string) (v1alpha1.Object, error) {
	rev := t.next()
	r.meta.ResourceVersion = formatRev(rev)
	raw, plain, err := t.s.encode(r)
	if err != nil {
		return nil, err
	}
	bkt, err := createObjectsBucket(t.tx, r.info.Kind, r.meta.Namespace)
	if err != nil {
		return nil, err
	}
	if err := bkt.Put([]byte(r.meta.Name), raw); err != nil {
		return nil, err
	}
	return plain, t.log(rev, typ, r.info.Kind, r.key(), raw)
}

// remove deletes r at the next revision (the DELETED change carries r as it
// was last), then the events about it.
func (t *txn) remove(r *record) (v1alpha1.Object, error) {
	rev := t.next()
	r.meta.ResourceVersion = formatRev(rev)
	raw, plain, err := t.s.encode(r)
	if err != nil {
		return nil, err
	}
	if bkt := getObjectsBucket(t.tx, r.info.Kind, r.meta.Namespace); bkt != nil {
		if err := bkt.Delete([]byte(r.meta.Name)); err != nil {
			return nil, err
		}
	}
	if err := t.log(rev, Deleted, r.info.Kind, r.key(), raw); err != nil {
		return nil, err
	}
	return plain, t.removeEventsAbout(r.meta.Namespace, r.info.Kind, r.meta.Name)
}

// create stores r as a new object: uid, generation 1, creationTimestamp.
func (t *txn) create(r *record) (v1alpha1.Object, error) {
	if bkt := getObjectsBucket(t.tx, r.info.Kind, r.meta.Namespace); bkt != nil && bkt.Get([]byte(r.meta.Name)) != nil {
		return nil, fmt.Errorf("%s: %w", describe(r.info, r.meta.Namespace, r.meta.Name), ErrAlreadyExists)
	}
	ts := now()
	r.status = nil // status is observed, never given
	r.meta.UID = newUID()
	r.meta.Generation = 1
	r.meta.CreationTimestamp = &ts
	r.meta.DeletionTimestamp = nil
	return t.put(r, Added)
}

// prepare checks obj and turns it into a record with its namespace defaulted.
func prepare(obj v1alpha1.Object, verb string) (*record, error) {
	info, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	if info.Kind == v1alpha1.KindEvent {
		return nil, fmt.Errorf("cannot %s an Event: events are written with RecordEvent: %w", verb, ErrInvalid)
	}
	r, err := toRecord(info, obj)
	if err != nil {
		return nil, err
	}
	r.meta.Namespace = defaultNS(r.meta.Namespace)
	if err := checkName(info, r.meta.Namespace, r.meta.Name); err != nil {
		return nil, err
	}
	return r, nil
}

// Create stores a new object. The namespace defaults to "default"; uid,
// resourceVersion, generation (1) and creationTimestamp are set, a given
// status and deletionTimestamp are dropped (set status with UpdateStatus),
// finalizers are kept, and obj is updated in place to what was stored.
// ErrAlreadyExists if it exists.
func (s *Store) Create(obj v1alpha1.Object) error {
	r, err := prepare(obj, "create")
	if err != nil {
		return err
	}
	return s.write(func(t *txn) error {
		plain, err := t.create(r)
		if err != nil {
			return err
		}
		t.after = append(t.after, func() { assign(obj, plain) })
		return nil
	})
}

// Get reads one object into into, which must be of kind's Go type. The
// namespace defaults to "default".
func (s *Store) Get(kind, namespace, name string, into v1alpha1.Object) error {
	info, err := kindInfo(kind)
	if err != nil {
		return err
	}
	if into == nil || reflect.TypeOf(into) != reflect.TypeOf(info.New()) {
		return fmt.Errorf("get %s: into is %T, want %T: %w", info.Kind, into, info.New(), ErrInvalid)
	}
	namespace = defaultNS(namespace)
	if info.Kind == v1alpha1.KindEvent {
		var ev *v1alpha1.Event
		err := s.db.View(func(tx *bolt.Tx) error {
			var err error
			ev, err = findEvent(tx, namespace, name)
			return err
		})
		if err != nil {
			return err
		}
		assign(into, ev)
		return nil
	}
	var raw []byte
	err = s.db.View(func(tx *bolt.Tx) error {
		if bkt := getObjectsBucket(tx, info.Kind, namespace); bkt != nil {
			if v := bkt.Get([]byte(name)); v != nil {
				raw = slices.Clone(v)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if raw == nil {
		return fmt.Errorf("%s: %w", describe(info, namespace, name), ErrNotFound)
	}
	obj, err := s.decode(info, raw)
	if err != nil {
		return err
	}
	assign(into, obj)
	return nil
}

// List returns the objects of kind in namespace ("" = all namespaces),
// sorted by namespace then name, and the revision they were read at (watch
// from it to follow on without gaps).
func (s *Store) List(kind, namespace string) ([]v1alpha1.Object, int64, error) {
	info, err := kindInfo(kind)
	if err != nil {
		return nil, 0, err
	}
	if info.Kind == v1alpha1.KindEvent {
		var out []v1alpha1.Object
		var rev int64
		err := s.db.View(func(tx *bolt.Tx) error {
			rev = readMeta(tx, metaKeyRevision)
			evs, err := listEvents(tx, namespace, nil)
			if err != nil {
				return err
			}
			sortEventsByName(evs)
			for _, ev := range evs {
				out = append(out, ev)
			}
			return nil
		})
		return out, rev, err
	}
	var raws [][]byte
	var rev int64
	err = s.db.View(func(tx *bolt.Tx) error {
		rev = readMeta(tx, metaKeyRevision)
		collect := func(bkt *bolt.Bucket) error {
			return bkt.ForEach(func(_, v []byte) error {
				if v != nil {
					raws = append(raws, slices.Clone(v))
				}
				return nil
			})
		}
		if namespace != "" {
			if bkt := getObjectsBucket(tx, info.Kind, namespace); bkt != nil {
				return collect(bkt)
			}
			return nil
		}
		return forEachBucket(getKindBucket(tx, info.Kind), func(_ []byte, b *bolt.Bucket) error { return collect(b) })
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]v1alpha1.Object, 0, len(raws))
	for _, raw := range raws {
		obj, err := s.decode(info, raw)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, obj)
	}
	return out, rev, nil
}

// checkRV compares the caller's resourceVersion with the stored one.
func checkRV(cur *record, given string) error {
	if given == cur.meta.ResourceVersion {
		return nil
	}
	if given == "" {
		return fmt.Errorf("%s: metadata.resourceVersion is required (now %s): %w", describe(cur.info, cur.meta.Namespace, cur.meta.Name), cur.meta.ResourceVersion, ErrConflict)
	}
	if _, err := strconv.ParseInt(given, 10, 64); err != nil {
		return fmt.Errorf("%s: resourceVersion %q is not a revision: %w", describe(cur.info, cur.meta.Namespace, cur.meta.Name), given, ErrInvalid)
	}
	return fmt.Errorf("%s: resourceVersion %s is stale (now %s): %w", describe(cur.info, cur.meta.Namespace, cur.meta.Name), given, cur.meta.ResourceVersion, ErrConflict)
}

// Update writes obj's labels, annotations, finalizers and spec. Its
// resourceVersion must equal the stored one (else ErrConflict); its status is
// ignored (see UpdateStatus). Generation is bumped only when the spec
// changed. When nothing changed nothing is written and obj is refreshed from
// the store. When the object is being deleted and the update leaves no
// finalizers, the object is removed (a DELETED change) along with its events.
// On success obj holds what was stored.
func (s *Store) Update(obj v1alpha1.Object) error {
	in, err := prepare(obj, "update")
	if err != nil {
		return err
	}
	return s.write(func(t *txn) error {
		cur, err := s.load(t.tx, in.info, in.meta.Namespace, in.meta.Name)
		if err != nil {
			return err
		}
		if err := checkRV(cur, in.meta.ResourceVersion); err != nil {
			return err
		}
		next := cur.clone()
		next.meta.Labels = in.meta.Labels
		next.meta.Annotations = in.meta.Annotations
		next.meta.Finalizers = in.meta.Finalizers
		next.body = in.body
		specChanged := !bodyEqual(cur.body, next.body)
		metaChanged := !maps.Equal(cur.meta.Labels, next.meta.Labels) ||
			!maps.Equal(cur.meta.Annotations, next.meta.Annotations) ||
			!slices.Equal(cur.meta.Finalizers, next.meta.Finalizers)
		var plain v1alpha1.Object
		switch {
		case next.meta.DeletionTimestamp != nil && len(next.meta.Finalizers) == 0:
			plain, err = t.remove(next)
		case !specChanged && !metaChanged:
			plain, err = cur.object()
		default:
			if specChanged {
				next.meta.Generation++
			}
			plain, err = t.put(next, Modified)
		}
		if err != nil {
			return err
		}
		t.after = append(t.after, func() { assign(obj, plain) })
		return nil
	})
}

// UpdateStatus writes only obj's status. Its resourceVersion must equal the
// stored one (else ErrConflict); metadata, spec and generation are kept.
// Nothing is written when the status is unchanged. On success obj holds what
// is stored.
func (s *Store) UpdateStatus(obj v1alpha1.Object) error {
	in, err := prepare(obj, "update the status of")
	if err != nil {
		return err
	}
	return s.write(func(t *txn) error {
		cur, err := s.load(t.tx, in.info, in.meta.Namespace, in.meta.Name)
		if err != nil {
			return err
		}
		if err := checkRV(cur, in.meta.ResourceVersion); err != nil {
			return err
		}
		var plain v1alpha1.Object
		if bytes.Equal(cur.status, in.status) {
			plain, err = cur.object()
		} else {
			next := cur.clone()
			next.status = in.status
			plain, err = t.put(next, Modified)
		}
		if err != nil {
			return err
		}
		t.after = append(t.after, func() { assign(obj, plain) })
		return nil
	})
}

// Delete deletes an object. With finalizers it is only marked (deletionTimestamp
// set once, a MODIFIED change) and removed when an Update clears them;
// without, it is removed now (a DELETED change carrying the last state)
// together with its events. The namespace defaults to "default".
func (s *Store) Delete(kind, namespace, name string) error {
	info, err := kindInfo(kind)
	if err != nil {
		return err
	}
	namespace = defaultNS(namespace)
	return s.write(func(t *txn) error {
		if info.Kind == v1alpha1.KindEvent {
			return t.deleteEvent(namespace, name)
		}
		cur, err := s.load(t.tx, info, namespace, name)
		if err != nil {
			return err
		}
		if len(cur.meta.Finalizers) == 0 {
			_, err := t.remove(cur)
			return err
		}
		if cur.meta.DeletionTimestamp != nil {
			return nil
		}
		ts := now()
		cur.meta.DeletionTimestamp = &ts
		_, err = t.put(cur, Modified)
		return err
	})
}

// ApplyResult says what Apply did (or would do) with one object.
type ApplyResult struct {
	Kind, Namespace, Name string
	Action                string // "created" | "configured" | "unchanged"
}

// Apply actions.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
)

// Apply creates or reconfigures objs in one write transaction: a missing
// object is created; an existing one gets the given labels, annotations and
// spec (uid, finalizers, status and creationTimestamp are kept; generation is
// bumped when the spec changed); an equal one is left alone, not written.
// An object being deleted is an error (ErrConflict). Any error writes nothing.
// With dryRun the results are computed and nothing is written. Secret values
// are compared in plain text. After a real apply each obj holds what is stored.
func (s *Store) Apply(objs []v1alpha1.Object, dryRun bool) ([]ApplyResult, error) {
	var results []ApplyResult
	err := s.write(func(t *txn) error {
		results = make([]ApplyResult, 0, len(objs))
		for i, obj := range objs {
			res, err := t.apply(obj)
			if err != nil {
				if len(objs) > 1 {
					return fmt.Errorf("object %d of %d: %w (nothing was applied)", i+1, len(objs), err)
				}
				return err
			}
			results = append(results, res)
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return results, nil
}

func (t *txn) apply(obj v1alpha1.Object) (ApplyResult, error) {
	in, err := prepare(obj, "apply")
	if err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{Kind: in.info.Kind, Namespace: in.meta.Namespace, Name: in.meta.Name}
	cur, err := t.s.load(t.tx, in.info, in.meta.Namespace, in.meta.Name)
	var plain v1alpha1.Object
	switch {
	case errors.Is(err, ErrNotFound):
		res.Action = ActionCreated
		plain, err = t.create(in)
	case err != nil:
		return res, err
	case cur.meta.DeletionTimestamp != nil:
		return res, fmt.Errorf("%s is being deleted; wait until it is gone, then apply again: %w", describe(cur.info, cur.meta.Namespace, cur.meta.Name), ErrConflict)
	default:
		next := cur.clone()
		next.meta.Labels = in.meta.Labels
		next.meta.Annotations = in.meta.Annotations
		next.body = in.body
		specChanged := !bodyEqual(cur.body, next.body)
		metaChanged := !maps.Equal(cur.meta.Labels, next.meta.Labels) || !maps.Equal(cur.meta.Annotations, next.meta.Annotations)
		if !specChanged && !metaChanged {
			res.Action = ActionUnchanged
			plain, err = cur.object()
			break
		}
		if specChanged {
			next.meta.Generation++
		}
		res.Action = ActionConfigured
		plain, err = t.put(next, Modified)
	}
	if err != nil {
		return res, err
	}
	t.after = append(t.after, func() { assign(obj, plain) })
	return res, nil
}
