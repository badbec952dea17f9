package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// Orphans are sandboxes the runtime has and the store does not: their
// object was deleted while msbd was down, so their runtime state (processes,
// mounts, writable layer) is removed. That is only right if the store is the
// one these sandboxes were made from, at least as new as when msbd last
// looked. A store swapped for another database, or restored from an older
// backup, lacks sandboxes that are very much wanted; removing them would
// destroy their writable layers. So msbd keeps a fence in the state
// directory — the store's instance ID and the highest revision it has seen —
// and removes orphans only while the store matches it and has not gone back
// in time. Otherwise it leaves them alone and says why, until an operator
// removes the fence file to accept the store as it is.

// FenceStore is what orphan collection needs from the store (implemented
// by *store.Store).
type FenceStore interface {
	List(kind, namespace string) ([]v1alpha1.Object, int64, error)
	Revision() int64
	InstanceID() string
	RotateInstanceID() error
}

// FenceFile is the fence's name in the state directory.
const FenceFile = "store-fence.json"

type fence struct {
	InstanceID string `json:"instanceID"`
	Revision   int64  `json:"revision"`
	// Held, once set, keeps orphans until an operator removes the file:
	// a restored store catching up in revision is still another history.
	Held string `json:"held,omitempty"`
}

// OrphanCollector removes orphaned sandboxes from every driver, guarded by
// the fence.
type OrphanCollector struct {
	mu      sync.Mutex // the fence file and saved
	running atomic.Bool
	path    string
	st      FenceStore
	drivers *vmdriver.Set
	log     *slog.Logger
	stop    time.Duration
	held    string // why orphans are kept, "" when the store matches the fence
	saved   int64  // revision last written to the fence
	markers string // the markers' directory (see markers.go)

	reported map[string]bool // orphans kept that have had their event

	// Events, if set, gets a Warning event about each orphan kept.
	Events EventSink

	// Network, if set, has its attachments of unknown sandboxes removed too.
	Network NetworkAttachments
}

// NetworkAttachments lists and removes sandboxes' networks.
type NetworkAttachments interface {
	AttachedIDs() []string
	Detach(id string) error
}

// NewOrphanCollector checks the store against the fence left by earlier runs.
func NewOrphanCollector(stateDir string, st FenceStore, drivers *vmdriver.Set, log *slog.Logger) *OrphanCollector {
	c := &OrphanCollector{path: filepath.Join(stateDir, FenceFile), st: st, drivers: drivers, log: log, stop: 5 * time.Second,
		markers: filepath.Join(stateDir, MarkerDir), reported: map[string]bool{}}
	b, err := os.ReadFile(c.path)
	var f fence
	switch {
	case errors.Is(err, os.ErrNotExist):
		// First start with this state directory, a version that kept no
		// fence, or an operator accepting the store: it is taken as it is,
		// under a new instance ID, so that no copy of it made before (a
		// backup restored later) passes for it.
		if err := st.RotateInstanceID(); err != nil {
			c.held = fmt.Sprintf("cannot give the database a new instance ID: %v", err)
		}
	case err != nil:
		c.held = fmt.Sprintf("cannot read %s: %v", c.path, err)
	case json.Unmarshal(b, &f) != nil || f.InstanceID == "":
		c.held = fmt.Sprintf("%s is not a fence this msbd wrote", c.path)
	case f.InstanceID != st.InstanceID():
		c.held = fmt.Sprintf("the database is not the one this state directory's sandboxes belong to (instance %s, expected %s)", st.InstanceID(), f.InstanceID)
	case f.Held != "":
		c.held = f.Held
	case st.Revision() < f.Revision:
		c.held = fmt.Sprintf("the database is older than this state directory's sandboxes (revision %d, but %d was seen): was it restored from a backup?", st.Revision(), f.Revision)
	}
	if c.held == "" {
		if why := c.restoredFrom(); why != "" {
			// Another history from here on: markers written from now on
			// must not pass for those of the one the backup lost.
			c.held = why
			if err := st.RotateInstanceID(); err != nil {
				log.Error("giving the restored database a new instance ID", "err", err)
			}
			if err := c.write(fence{InstanceID: st.InstanceID(), Revision: st.Revision(), Held: why}); err != nil {
				log.Error("recording that orphans are held", "err", err)
			}
		}
	} else if err == nil && f.InstanceID != "" && f.Held == "" {
		// Remember it: later the store's revision may pass the fence's.
		f.Held = c.held
		if err := c.write(f); err != nil {
			log.Error("recording that orphans are held", "err", err)
		}
	}
	if c.held != "" {
		log.Error("sandboxes the store does not know will be kept, not removed: "+c.held,
			"toAccept", "remove "+c.path+" and restart msbd to let it remove them")
	}
	return c
}

// Collect removes the runtime state of sandboxes whose object is gone, or
// only reports them while the store does not match the fence; then it moves
// the fence to the store's revision. At resyncs it runs in the background
// (each orphan gets a stop grace period) and skips a round while the last
// one runs; at startup msbd calls CollectOnce before it serves.
func (c *OrphanCollector) Collect(ctx context.Context) {
	if !c.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.running.Store(false)
		if err := c.CollectOnce(ctx); err != nil {
			c.log.Warn("collecting orphaned sandboxes", "err", err)
		}
	}()
}

// CollectOnce is one collection, done before it returns.
func (c *OrphanCollector) CollectOnce(ctx context.Context) error {
	rev := c.st.Revision() // before listing: the fence never claims more than was seen
	type orphan struct {
		drv vmdriver.Driver
		id  string
	}
	var orphans []orphan
	var ids []string
	drivers := c.drivers.All()
	listed := make([][]string, len(drivers))
	listedAll := true
	for i, d := range drivers {
		// A driver that cannot list is skipped this round: orphans are only
		// ever removed from drivers that listed, so the others go on.
		got, err := d.List(ctx)
		if err != nil {
			c.log.Warn("listing a driver's sandboxes for orphan collection; skipping it", "driver", d.Name(), "err", err)
			listedAll = false
			continue
		}
		listed[i] = got
	}
	var attached []string
	if c.Network != nil {
		attached = c.Network.AttachedIDs()
	}
	objs, _, err := c.st.List(v1alpha1.KindSandbox, "")
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, o := range objs {
		known[o.GetMetadata().UID] = true
	}
	for i, d := range drivers {
		for _, id := range listed[i] {
			if !known[id] {
				orphans = append(orphans, orphan{d, id})
				ids = append(ids, id)
			}
		}
	}
	if c.held != "" {
		if len(orphans) > 0 {
			c.log.Warn("keeping sandboxes the store does not know: "+c.held, "ids", ids,
				"toAccept", "remove "+c.path+" and restart msbd to let it remove them")
			c.heldEvents(ids)
		}
		return nil
	}
	keep := map[string]bool{}
	for id := range known {
		keep[id] = true
	}
	for _, o := range orphans {
		c.log.Info("removing orphaned sandbox", "id", o.id, "driver", o.drv.Name())
		_ = o.drv.Stop(ctx, o.id, c.stop)
		if err := o.drv.Delete(ctx, o.id, true); err != nil {
			c.log.Warn("removing orphaned sandbox", "id", o.id, "driver", o.drv.Name(), "err", err)
			keep[o.id] = true
		}
	}
	if listedAll { // a driver that did not list may hold any of them
		c.pruneMarkers(keep, rev)
	}
	// After the sandboxes stopped: a namespace goes when nothing runs in it.
	for _, id := range attached {
		if !known[id] {
			c.log.Info("removing an orphaned sandbox network", "id", id)
			if err := c.Network.Detach(id); err != nil {
				c.log.Warn("removing an orphaned sandbox network", "id", id, "err", err)
			}
		}
	}
	return c.save(rev)
}

// Advance moves the fence to the store's current revision: called before
// each sandbox is created in the runtime, so the fence is always at least
// the revision of every sandbox's object. While the store does not match the
// fence it stays as it is.
func (c *OrphanCollector) Advance() error {
	if c.held != "" {
		return nil
	}
	return c.save(c.st.Revision())
}

// cover makes the fence at least need, writing the store's current
// revision when it is not.
func (c *OrphanCollector) cover(need int64) error {
	c.mu.Lock()
	saved := c.saved
	c.mu.Unlock()
	if need <= saved {
		return nil
	}
	return c.save(max(c.st.Revision(), need))
}

// save writes the fence at rev (atomically, durably) when it moved forward.
func (c *OrphanCollector) save(rev int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.saved {
		return nil
	}
	if err := c.write(fence{InstanceID: c.st.InstanceID(), Revision: rev}); err != nil {
		return err
	}
	c.saved = rev
	return nil
}

// write replaces the fence file durably: the data, the rename and the
// directory entry all reach the disk.
func (c *OrphanCollector) write(fc fence) error {
	b, err := json.Marshal(fc)
	if err != nil {
		return err
	}
	return writeDurably(c.path, b)
}
