package v1alpha1

import (
	"errors"
	"fmt"
	"reflect"
)

// Error classes shared by the store, the API server and the controllers.
// Every error for one of these cases wraps the class with context (the object
// and what was wrong); test with errors.Is. The API server maps each class to
// its HTTP status, so a class means the same thing on both sides of the wire.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the resourceVersion is stale, or the object is being deleted.
	ErrConflict = errors.New("conflict")
	// ErrAlreadyExists: Create of an object that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrGone: a watch asked to resume from a revision the changelog no longer
	// holds; list again and watch from the list's revision.
	ErrGone = errors.New("revision is gone")
	// ErrInvalid: the request itself is malformed (unknown kind, empty name, ...).
	ErrInvalid = errors.New("invalid")
)

// KindOf finds obj's kind from its Go type; a TypeMeta.Kind that names
// another kind (by any of its names, see LookupKind) is an ErrInvalid.
func KindOf(obj Object) (KindInfo, error) {
	if obj == nil || reflect.ValueOf(obj).IsNil() {
		return KindInfo{}, fmt.Errorf("nil object: %w", ErrInvalid)
	}
	t := reflect.TypeOf(obj)
	for _, k := range Kinds {
		if reflect.TypeOf(k.New()) != t {
			continue
		}
		if tk := obj.GetTypeMeta().Kind; tk != "" && tk != k.Kind {
			if named, err := LookupKind(tk); err == nil && named.Kind == k.Kind {
				return k, nil
			}
			return k, fmt.Errorf("object of type %s says kind %q: %w", t, tk, ErrInvalid)
		}
		return k, nil
	}
	return KindInfo{}, fmt.Errorf("type %s is not a known kind: %w", t, ErrInvalid)
}
