package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// kindInfo finds a kind by its Kind ("Sandbox") or any name LookupKind knows.
func kindInfo(kind string) (v1alpha1.KindInfo, error) {
	for _, k := range v1alpha1.Kinds {
		if k.Kind == kind {
			return k, nil
		}
	}
	k, err := v1alpha1.LookupKind(kind)
	if err != nil {
		return k, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return k, nil
}

// checkName rejects names the key layout cannot hold.
func checkName(info v1alpha1.KindInfo, ns, name string) error {
	for _, f := range []struct{ what, v string }{{"name", name}, {"namespace", ns}} {
		switch {
		case f.v == "":
			return fmt.Errorf("%s: metadata.%s is empty: %w", info.Singular, f.what, ErrInvalid)
		case len(f.v) > 253:
			return fmt.Errorf("%s %q: metadata.%s is longer than 253 characters: %w", info.Singular, f.v, f.what, ErrInvalid)
		case strings.ContainsAny(f.v, "/\x00"):
			return fmt.Errorf("%s %q: metadata.%s must not contain '/': %w", info.Singular, f.v, f.what, ErrInvalid)
		}
	}
	return nil
}

func defaultNS(ns string) string {
	if ns == "" {
		return v1alpha1.DefaultNamespace
	}
	return ns
}

func describe(info v1alpha1.KindInfo, ns, name string) string {
	return info.Singular + " " + ns + "/" + name
}

// record is an object split into the parts the store treats differently.
// Built from typed objects only, so the raw parts are canonical JSON
// (encoding/json output: fixed field order, sorted map keys) and compare
// byte for byte.
type record struct {
	info   v1alpha1.KindInfo
	meta   v1alpha1.ObjectMeta
	body   map[string]json.RawMessage // everything but apiVersion, kind, metadata and status: the spec (an Event's fields)
	status json.RawMessage
}

func toRecord(info v1alpha1.KindInfo, obj v1alpha1.Object) (*record, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", info.Singular, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	r := &record{info: info, body: m, status: m["status"]}
	if err := json.Unmarshal(m["metadata"], &r.meta); err != nil {
		return nil, err
	}
	for _, k := range []string{"apiVersion", "kind", "metadata", "status"} {
		delete(m, k)
	}
	return r, nil
}

func (r *record) key() string { return v1alpha1.Key(r.info.Kind, r.meta.Namespace, r.meta.Name) }

func (r *record) clone() *record {
	c := *r
	c.body = maps.Clone(r.body)
	b, _ := json.Marshal(r.meta)
	c.meta = v1alpha1.ObjectMeta{}
	json.Unmarshal(b, &c.meta)
	return &c
}

// object assembles a typed object with TypeMeta filled (values in plain text).
func (r *record) object() (v1alpha1.Object, error) {
	m := make(map[string]json.RawMessage, len(r.body)+4)
	maps.Copy(m, r.body)
	m["apiVersion"], _ = json.Marshal(v1alpha1.APIVersion)
	m["kind"], _ = json.Marshal(r.info.Kind)
	meta, err := json.Marshal(r.meta)
	if err != nil {
		return nil, err
	}
	m["metadata"] = meta
	if r.status != nil {
		m["status"] = r.status
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	obj := r.info.New()
	if err := json.Unmarshal(b, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", r.info.Singular, err)
	}
	return obj, nil
}

func bodyEqual(a, b map[string]json.RawMessage) bool {
	return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) })
}

// encode turns r into the stored JSON (Secret values encrypted) and the plain
// typed object handed back to callers.
func (s *Store) encode(r *record) (stored []byte, plain v1alpha1.Object, err error) {
	plain, err = r.object()
	if err != nil {
		return nil, nil, err
	}
	out := plain
	if sec, ok := plain.(*v1alpha1.Secret); ok {
		if out, err = s.sealSecret(sec); err != nil {
			return nil, nil, err
		}
	}
	stored, err = json.Marshal(out)
	return stored, plain, err
}

// decode reads stored JSON into a typed object with TypeMeta filled and
// Secret values decrypted.
func (s *Store) decode(info v1alpha1.KindInfo, raw []byte) (v1alpha1.Object, error) {
	obj := info.New()
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil, fmt.Errorf("decode stored %s: %w", info.Singular, err)
	}
	tm := obj.GetTypeMeta()
	tm.APIVersion, tm.Kind = v1alpha1.APIVersion, info.Kind
	if sec, ok := obj.(*v1alpha1.Secret); ok {
		if err := s.openSecret(sec); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// load reads an object as a record; ErrNotFound when absent.
func (s *Store) load(tx *bolt.Tx, info v1alpha1.KindInfo, ns, name string) (*record, error) {
	var raw []byte
	if bkt := getObjectsBucket(tx, info.Kind, ns); bkt != nil {
		raw = bkt.Get([]byte(name))
	}
	if raw == nil {
		return nil, fmt.Errorf("%s: %w", describe(info, ns, name), ErrNotFound)
	}
	obj, err := s.decode(info, raw)
	if err != nil {
		return nil, err
	}
	return toRecord(info, obj)
}

// assign copies src into dst (both the same concrete type).
func assign(dst, src v1alpha1.Object) {
	reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem())
}
