package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// migration moves the database from version-1 to version. Migrations run in
// order, all in one write transaction, when Open finds an older schema.
type migration struct {
	version int64
	name    string
	migrate func(tx *bolt.Tx) error
}

// migrations is ordered; append, never edit a released entry.
var migrations = []migration{
	{version: 1, name: "initial layout", migrate: migrateInitial},
}

// schemaVersion is the version this code reads and writes.
var schemaVersion = migrations[len(migrations)-1].version

// migrateInitial creates meta/, objects/, changelog/ and events/ and starts
// the global revision at 1, so a list of an empty store returns revision 1
// and a watch from it sees the first change (no "0 means now" ambiguity).
func migrateInitial(tx *bolt.Tx) error {
	meta, err := createMetaBucket(tx)
	if err != nil {
		return err
	}
	for _, k := range [][]byte{bucketKeyObjects, bucketKeyChangelog, bucketKeyEvents} {
		if _, err := createBucketIfNotExists(tx, bucketKeyVersion, k); err != nil {
			return err
		}
	}
	if meta.Get(metaKeyRevision) == nil {
		if err := meta.Put(metaKeyRevision, encodeInt(1)); err != nil {
			return err
		}
	}
	if meta.Get(metaKeyCompactedRevision) == nil {
		if err := meta.Put(metaKeyCompactedRevision, encodeInt(0)); err != nil {
			return err
		}
	}
	return nil
}

// migrate brings db to schemaVersion. A database written by a newer msbd is
// refused rather than guessed at.
func migrate(db *bolt.DB, path string) error {
	return db.Update(func(tx *bolt.Tx) error {
		cur := readMeta(tx, metaKeySchemaVersion)
		if cur > schemaVersion {
			return fmt.Errorf("%s has schema version %d, newer than this msbd supports (%d): upgrade msbd", path, cur, schemaVersion)
		}
		if cur == schemaVersion {
			return nil
		}
		for _, m := range migrations {
			if m.version <= cur {
				continue
			}
			if err := m.migrate(tx); err != nil {
				return fmt.Errorf("migrate %s to schema version %d (%s): %w", path, m.version, m.name, err)
			}
			cur = m.version
		}
		meta, err := createMetaBucket(tx)
		if err != nil {
			return err
		}
		return meta.Put(metaKeySchemaVersion, encodeInt(cur))
	})
}
