package store

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	// changelogLimit is how many revisions the changelog keeps for watch resumes.
	changelogLimit = 10000
	// watchQueueLimit is how many undelivered events a watcher may have before
	// its channel is closed (the consumer lists again and re-watches).
	watchQueueLimit = 10000
	// lockTimeout bounds the wait for the database file lock.
	lockTimeout = time.Second
)

// Store is msb's desired-state database. All methods are safe for concurrent use.
type Store struct {
	db         *bolt.DB
	path       string
	aead       cipher.AEAD // nil without WithSecretKeyFile
	instanceID string

	changelogLimit  int64
	watchQueueLimit int

	// writeMu serializes write transactions together with the notification of
	// watchers, so watchers see revisions in commit order.
	writeMu sync.Mutex
	closed  bool
	rev     atomic.Int64 // last committed revision

	watchMu  sync.Mutex
	watchers map[*watcher]struct{}
	done     chan struct{} // closed by Close
}

type options struct {
	secretKeyFile   string
	changelogLimit  int64
	watchQueueLimit int
}

// Option configures Open.
type Option func(*options)

// WithSecretKeyFile names the AES-256-GCM key that encrypts Secret values at
// rest. The file is created (mode 0600, directory 0700) when missing. Without
// it, the store refuses to write or read Secrets that carry values.
func WithSecretKeyFile(path string) Option {
	return func(o *options) { o.secretKeyFile = path }
}

// withChangelogLimit and withWatchQueueLimit let tests use small bounds.
func withChangelogLimit(n int64) Option { return func(o *options) { o.changelogLimit = n } }
func withWatchQueueLimit(n int) Option  { return func(o *options) { o.watchQueueLimit = n } }

// Open opens (creating if needed) the database at path, usually
// <state-dir>/msb.db, and migrates it to the current schema. Only one process
// may have it open; a second Open fails after about a second.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{changelogLimit: changelogLimit, watchQueueLimit: watchQueueLimit}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Store{
		path:            path,
		changelogLimit:  o.changelogLimit,
		watchQueueLimit: o.watchQueueLimit,
		watchers:        make(map[*watcher]struct{}),
		done:            make(chan struct{}),
	}
	if o.secretKeyFile != "" {
		key, err := loadOrCreateKey(o.secretKeyFile)
		if err != nil {
			return nil, err
		}
		if s.aead, err = newAEAD(key); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("another msbd is using %s (its lock is held; stop it or use another --state-dir): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := migrate(db, path); err != nil {
		db.Close()
		return nil, err
	}
	s.db = db
	err = db.Update(func(tx *bolt.Tx) error {
		s.rev.Store(readMeta(tx, metaKeyRevision))
		meta, err := createMetaBucket(tx)
		if err != nil {
			return err
		}
		if id := meta.Get(metaKeyInstanceID); id != nil {
			s.instanceID = string(id)
			return nil
		}
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		s.instanceID = hex.EncodeToString(b[:])
		return meta.Put(metaKeyInstanceID, []byte(s.instanceID))
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes every watch channel and the database.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	return s.db.Close()
}

// Revision is the last committed revision (1 for an empty store).
func (s *Store) Revision() int64 { return s.rev.Load() }

// RotateInstanceID gives this database a new instance ID: from then on no
// copy of it made before passes for it.
func (s *Store) RotateInstanceID() error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	id := hex.EncodeToString(b[:])
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return errClosed
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := createMetaBucket(tx)
		if err != nil {
			return err
		}
		return meta.Put(metaKeyInstanceID, []byte(id))
	})
	if err == nil {
		s.instanceID = id
	}
	return err
}

// InstanceID names this database: random, set when it was first opened, and
// kept by copies of the file (a backup restored is the same instance, at an
// older revision).
func (s *Store) InstanceID() string { return s.instanceID }

var errClosed = errors.New("store is closed")

// errDryRun rolls back a dry-run transaction.
var errDryRun = errors.New("dry run")

// change is one changelog entry, and what watchers are handed.
type change struct {
	Type   string          `json:"type"`
	Kind   string          `json:"kind"`
	Key    string          `json:"key"`
	Object json.RawMessage `json:"object"` // as stored: Secret values encrypted
	rev    int64
}

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
)

// txn is one write transaction: it hands out revisions and logs changes.
type txn struct {
	s       *Store
	tx      *bolt.Tx
	rev     int64
	changes []change
	after   []func() // run after a successful commit
}

// next takes the next revision.
func (t *txn) next() int64 {
	t.rev++
	return t.rev
}

// log records the change made at rev in the changelog.
func (t *txn) log(rev int64, typ, kind, key string, obj []byte) error {
	c := change{Type: typ, Kind: kind, Key: key, Object: obj, rev: rev}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	bkt, err := createChangelogBucket(t.tx)
	if err != nil {
		return err
	}
	if err := bkt.Put(encodeInt(rev), b); err != nil {
		return err
	}
	t.changes = append(t.changes, c)
	return nil
}

// finish stores the revision and trims the changelog.
func (t *txn) finish() error {
	if len(t.changes) == 0 {
		return nil
	}
	meta, err := createMetaBucket(t.tx)
	if err != nil {
		return err
	}
	if err := meta.Put(metaKeyRevision, encodeInt(t.rev)); err != nil {
		return err
	}
	cutoff := t.rev - t.s.changelogLimit
	if cutoff <= decodeInt(meta.Get(metaKeyCompactedRevision)) {
		return nil
	}
	bkt := getChangelogBucket(t.tx)
	var old [][]byte
	c := bkt.Cursor()
	for k, _ := c.First(); k != nil && decodeInt(k) <= cutoff; k, _ = c.Next() {
		old = append(old, k)
	}
	for _, k := range old {
		if err := bkt.Delete(k); err != nil {
			return err
		}
	}
	return meta.Put(metaKeyCompactedRevision, encodeInt(cutoff))
}

// write runs fn in a write transaction, then tells watchers what changed,
// before another write can start.
func (s *Store) write(fn func(t *txn) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return errClosed
	}
	var t *txn
	err := s.db.Update(func(tx *bolt.Tx) error {
		t = &txn{s: s, tx: tx, rev: readMeta(tx, metaKeyRevision)}
		if err := fn(t); err != nil {
			return err
		}
		return t.finish()
	})
	if err != nil {
		return err
	}
	if len(t.changes) > 0 {
		s.rev.Store(t.rev)
		s.publish(t.changes)
	}
	for _, f := range t.after {
		f()
	}
	return nil
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func now() time.Time { return time.Now().UTC() }

func formatRev(rev int64) string { return strconv.FormatInt(rev, 10) }
