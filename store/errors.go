package store

import "errors"

// Sentinel errors. Every error the store returns for these cases wraps one of
// them with context (the object and what was wrong); test with errors.Is.
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
