package store

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Bucket and key names; the tree is drawn in doc.go.
var (
	bucketKeyVersion   = []byte("v1")
	bucketKeyMeta      = []byte("meta")
	bucketKeyObjects   = []byte("objects")
	bucketKeyChangelog = []byte("changelog")
	bucketKeyEvents    = []byte("events")

	metaKeySchemaVersion     = []byte("schemaVersion")
	metaKeyRevision          = []byte("revision")
	metaKeyCompactedRevision = []byte("compactedRevision")
	metaKeyInstanceID        = []byte("instanceID")
)

// getBucket walks keys from the root; nil when any bucket on the way is missing.
func getBucket(tx *bolt.Tx, keys ...[]byte) *bolt.Bucket {
	bkt := tx.Bucket(keys[0])
	for _, k := range keys[1:] {
		if bkt == nil {
			return nil
		}
		bkt = bkt.Bucket(k)
	}
	return bkt
}

// createBucketIfNotExists walks keys from the root, creating what is missing.
func createBucketIfNotExists(tx *bolt.Tx, keys ...[]byte) (*bolt.Bucket, error) {
	bkt, err := tx.CreateBucketIfNotExists(keys[0])
	if err != nil {
		return nil, err
	}
	for _, k := range keys[1:] {
		if bkt, err = bkt.CreateBucketIfNotExists(k); err != nil {
			return nil, err
		}
	}
	return bkt, nil
}

func getMetaBucket(tx *bolt.Tx) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyMeta)
}

func createMetaBucket(tx *bolt.Tx) (*bolt.Bucket, error) {
	return createBucketIfNotExists(tx, bucketKeyVersion, bucketKeyMeta)
}

// getKindBucket is objects/<Kind>: one nested bucket per namespace.
func getKindBucket(tx *bolt.Tx, kind string) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyObjects, []byte(kind))
}

// getObjectsBucket is objects/<Kind>/<namespace>: name → object JSON.
func getObjectsBucket(tx *bolt.Tx, kind, namespace string) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyObjects, []byte(kind), []byte(namespace))
}

func createObjectsBucket(tx *bolt.Tx, kind, namespace string) (*bolt.Bucket, error) {
	return createBucketIfNotExists(tx, bucketKeyVersion, bucketKeyObjects, []byte(kind), []byte(namespace))
}

func getChangelogBucket(tx *bolt.Tx) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyChangelog)
}

func createChangelogBucket(tx *bolt.Tx) (*bolt.Bucket, error) {
	return createBucketIfNotExists(tx, bucketKeyVersion, bucketKeyChangelog)
}

// getEventsRootBucket is events/: one nested bucket per namespace.
func getEventsRootBucket(tx *bolt.Tx) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyEvents)
}

// getEventsNamespaceBucket is events/<namespace>: <involved Kind>/<involved name>/...
func getEventsNamespaceBucket(tx *bolt.Tx, namespace string) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyEvents, []byte(namespace))
}

// getEventsBucket is events/<namespace>/<Kind>/<name>: event name → Event JSON.
func getEventsBucket(tx *bolt.Tx, namespace, kind, name string) *bolt.Bucket {
	return getBucket(tx, bucketKeyVersion, bucketKeyEvents, []byte(namespace), []byte(kind), []byte(name))
}

func createEventsBucket(tx *bolt.Tx, namespace, kind, name string) (*bolt.Bucket, error) {
	return createBucketIfNotExists(tx, bucketKeyVersion, bucketKeyEvents, []byte(namespace), []byte(kind), []byte(name))
}

func encodeInt(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

// decodeInt reads a big-endian int64; missing or malformed values read as 0.
func decodeInt(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// readMeta reads an int64 from v1/meta; 0 when absent.
func readMeta(tx *bolt.Tx, key []byte) int64 {
	bkt := getMetaBucket(tx)
	if bkt == nil {
		return 0
	}
	return decodeInt(bkt.Get(key))
}

// forEachBucket calls fn for every nested bucket of bkt, in key order.
func forEachBucket(bkt *bolt.Bucket, fn func(name []byte, child *bolt.Bucket) error) error {
	if bkt == nil {
		return nil
	}
	c := bkt.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		if err := fn(k, bkt.Bucket(k)); err != nil {
			return err
		}
	}
	return nil
}
