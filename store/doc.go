// Package store keeps msb's desired state in bbolt: objects with a global
// revision, resourceVersion and generation, a bounded changelog that feeds
// revision-ordered watches, and Kubernetes-style events.
//
// The bucket tree (update it with every schema change, and bump the schema
// version with a migration in migrate.go):
//
//	v1/                                        layout major version
//	├── meta/
//	│   ├── schemaVersion     → uint64 BE      last migration applied (see migrations)
//	│   ├── revision          → int64 BE       global revision; starts at 1 on an empty store
//	│   ├── compactedRevision → int64 BE       highest revision trimmed from changelog/
//	│   └── instanceID        → 32 hex chars   random, set once: which database this is
//	├── objects/
//	│   └── <Kind>/<namespace>/<name> → object JSON (Secret values encrypted, "enc:v1:…")
//	├── changelog/
//	│   └── <revision int64 BE> → {"type","kind","key","object"}   one entry per revision;
//	│                               the last changelogLimit (10000) revisions are kept,
//	│                               older ones are trimmed in the same write transaction
//	└── events/
//	    └── <namespace>/<involved Kind>/<involved name>/<event name> → Event JSON
//	                                (at most maxEventsPerObject (64) per involved object)
//
// Every change (create, update, status update, delete, event recorded, event
// dropped) takes the next revision; a transaction that changes several things
// takes several consecutive revisions. An object's resourceVersion is the
// revision of its last change, in decimal.
//
// Writes are serialized by Store.writeMu around the bbolt write transaction;
// watchers are notified after the commit and before the mutex is released, so
// they see revisions in order with no gaps. Notification only appends to a
// per-watcher queue and never blocks a writer. Reads use bbolt View
// transactions and run concurrently with writes.
package store
