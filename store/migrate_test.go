package store

import (
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"msb.dev/msb/apis/v1alpha1"
)

// Version 0 (an empty bbolt file, as a fresh or pre-schema database) → 1.
func TestMigrateFromEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msb.db")
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	must(t, db.Close())

	s, err := Open(path)
	must(t, err)
	if s.Revision() != 1 {
		t.Fatalf("revision after migration = %d, want 1", s.Revision())
	}
	must(t, s.Create(sandbox("", "a", "x")))
	must(t, s.Close())

	db, err = bolt.Open(path, 0o600, nil)
	must(t, err)
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if v := readMeta(tx, metaKeySchemaVersion); v != schemaVersion {
			t.Errorf("schemaVersion = %d, want %d", v, schemaVersion)
		}
		for _, k := range [][]byte{bucketKeyObjects, bucketKeyChangelog, bucketKeyEvents} {
			if getBucket(tx, bucketKeyVersion, k) == nil {
				t.Errorf("bucket v1/%s missing", k)
			}
		}
		if getObjectsBucket(tx, v1alpha1.KindSandbox, "default").Get([]byte("a")) == nil {
			t.Error("object not at objects/Sandbox/default/a")
		}
		return nil
	})
	must(t, err)
}

func TestMigrateRefusesNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msb.db")
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error {
		meta, err := createMetaBucket(tx)
		if err != nil {
			return err
		}
		return meta.Put(metaKeySchemaVersion, encodeInt(schemaVersion+1))
	}))
	must(t, db.Close())
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer than this msbd supports") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}
