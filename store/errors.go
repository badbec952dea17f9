package store

import "msb.dev/msb/apis/v1alpha1"

// The store's errors are the shared classes of v1alpha1 (see there): every
// error the store returns for these cases wraps one of them with context;
// test with errors.Is against either name.
var (
	ErrNotFound      = v1alpha1.ErrNotFound
	ErrConflict      = v1alpha1.ErrConflict
	ErrAlreadyExists = v1alpha1.ErrAlreadyExists
	ErrGone          = v1alpha1.ErrGone
	ErrInvalid       = v1alpha1.ErrInvalid
)
