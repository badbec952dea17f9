// Package storetest opens real stores for tests: a bbolt database and a secret key
// file in the test's temporary directory. Tests use the real store rather than a fake
// because the store's behaviour (revisions, watches, sealed secrets) is part of what
// they check, and bbolt is fast enough on a temp dir.
//
// The store package's own tests cannot import this package (it imports store), so
// they keep their own internal helper.
package storetest

import (
	"path/filepath"
	"testing"

	"msb.dev/msb/store"
)

// Open opens a new store at msb.db in a fresh t.TempDir(), with its secret key at
// keys/secrets.key in the same directory (created by the store on first use, so
// Secrets can be written). opts are applied after the key file option, so a test may
// replace it. The store is closed when the test and its subtests finish; closing it
// earlier is allowed (Close is idempotent).
func Open(t testing.TB, opts ...store.Option) *store.Store {
	t.Helper()
	dir := t.TempDir()
	opts = append([]store.Option{store.WithSecretKeyFile(filepath.Join(dir, "keys", "secrets.key"))}, opts...)
	st, err := store.Open(filepath.Join(dir, "msb.db"), opts...)
	if err != nil {
		t.Fatalf("storetest: open store in %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("storetest: close store: %v", err)
		}
	})
	return st
}
