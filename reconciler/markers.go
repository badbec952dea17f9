package reconciler

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"msb.dev/msb/apis/v1alpha1"
)

// The fence alone cannot see a restore of the whole state directory: the
// backup holds a fence that matches the database it was taken with, so the
// sandboxes created after it would look deleted and be removed. A marker per
// sandbox, written before the sandbox is first created in the runtime and
// kept in its own directory (which a restore copied over the state directory
// does not empty), remembers the store's instance ID and revision at that
// moment. The store's revision only grows, so a marker of this instance
// newer than the store proves that the store went back in time: msbd gives
// the database a new instance ID (its history forked), holds the orphans as
// for any other fence mismatch, and says so.

// MarkerDir is the markers' directory in the state directory.
const MarkerDir = "sandbox-markers"

// ReasonOrphansHeld: a sandbox the store does not know is kept rather than
// removed, because the store does not match the state directory.
const ReasonOrphansHeld = "OrphanKept"

// marker is one sandbox's creation record.
type marker struct {
	InstanceID string `json:"instanceID"`
	Revision   int64  `json:"revision"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
}

// BeforeCreate moves the fence forward and writes sb's marker if it has
// none: the SandboxReconciler's hook before a sandbox is created in the
// runtime.
//
// The fence need only cover sb's own revision: one durable write covers
// every sandbox of an apply, where writing it at each start would
// serialize all of them on its lock and an fsync.
func (c *OrphanCollector) BeforeCreate(sb *v1alpha1.Sandbox) error {
	need, err := strconv.ParseInt(sb.Metadata.ResourceVersion, 10, 64)
	if err != nil || need <= 0 {
		need = c.st.Revision()
	}
	id := sb.Metadata.UID
	if id == "" || filepath.Base(id) != id || id == "." || id == ".." {
		return fmt.Errorf("sandbox %s has no usable uid %q", sb.Metadata.Name, id)
	}
	// The fence and the marker are independent files: their disk syncs
	// (two each) overlap.
	covered := make(chan error, 1)
	if c.held == "" {
		go func() { covered <- c.cover(need) }()
	} else {
		covered <- nil
	}
	err = c.writeMarker(sb, id)
	if cerr := <-covered; cerr != nil {
		return cerr
	}
	return err
}

// writeMarker writes sandbox id's marker unless it has one.
func (c *OrphanCollector) writeMarker(sb *v1alpha1.Sandbox, id string) error {
	p := filepath.Join(c.markers, id)
	if _, err := os.Stat(p); err == nil {
		return nil // created before: its first revision stands
	}
	if err := os.MkdirAll(c.markers, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(marker{InstanceID: c.st.InstanceID(), Revision: c.st.Revision(), Namespace: sb.Metadata.Namespace, Name: sb.Metadata.Name})
	if err != nil {
		return err
	}
	return writeDurably(p, b)
}

// readMarkers returns every marker by sandbox id (unreadable ones skipped:
// they prove nothing).
func (c *OrphanCollector) readMarkers() map[string]marker {
	out := map[string]marker{}
	ents, err := os.ReadDir(c.markers)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) == ".tmp" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.markers, e.Name()))
		var m marker
		if err != nil || json.Unmarshal(b, &m) != nil || m.InstanceID == "" {
			continue
		}
		out[e.Name()] = m
	}
	return out
}

// restoredFrom returns why the store must have been restored from a backup
// — a marker of its instance newer than it — or "".
func (c *OrphanCollector) restoredFrom() string {
	rev := c.st.Revision()
	for id, m := range c.readMarkers() {
		if m.InstanceID == c.st.InstanceID() && m.Revision > rev {
			return fmt.Sprintf("the state directory was restored from a backup: sandbox %s/%s (%s) was created at revision %d of this database, which is now at revision %d; sandboxes it does not know are newer than it",
				m.Namespace, m.Name, id, m.Revision, rev)
		}
	}
	return ""
}

// heldEvents leaves a Warning event about each orphan kept (once per msbd
// run), named as its marker recorded it, so `msbctl events` says what msbd
// keeps and why, not only its log.
func (c *OrphanCollector) heldEvents(ids []string) {
	if c.Events == nil || len(ids) == 0 {
		return
	}
	markers := c.readMarkers()
	for _, id := range ids {
		if c.reported[id] {
			continue
		}
		ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: "default", Name: id, UID: id}
		if m, ok := markers[id]; ok && m.Name != "" {
			ref.Namespace, ref.Name = m.Namespace, m.Name
		}
		msg := fmt.Sprintf("kept, not removed, though the store does not know it (uid %s): %s; to let msbd remove it, remove %s and restart msbd", id, c.held, c.path)
		if err := c.Events.RecordEvent(ref, v1alpha1.EventWarning, ReasonOrphansHeld, msg); err != nil {
			c.log.Warn("recording that an orphan is kept", "id", id, "err", err)
			continue
		}
		c.reported[id] = true
	}
}

// pruneMarkers removes the markers of sandboxes neither the store (as
// listed at revision rev) nor any runtime holds any more. A marker newer
// than rev may be of an object created since the list, and stays.
func (c *OrphanCollector) pruneMarkers(keep map[string]bool, rev int64) {
	for id, m := range c.readMarkers() {
		if keep[id] || (m.InstanceID == c.st.InstanceID() && m.Revision > rev) {
			continue
		}
		if err := os.Remove(filepath.Join(c.markers, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("removing a sandbox marker", "id", id, "err", err)
		}
	}
}

// Held is why orphans are kept, "" while the store matches the state
// directory.
func (c *OrphanCollector) Held() string { return c.held }

// writeDurably replaces path with data: the data, the rename and the
// directory entry all reach the disk.
func writeDurably(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(filepath.Dir(path)); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// AddInfo reports in h (GET /info, `msbctl info`) whether orphans are
// removed or kept, and why and how to accept the store while they are kept.
func (c *OrphanCollector) AddInfo(h *v1alpha1.HostInfo) {
	item := v1alpha1.InfoItem{Name: "orphaned sandboxes", Value: "removed", OK: true,
		Detail: "the store matches " + c.path}
	if c.held != "" {
		item = v1alpha1.InfoItem{Name: "orphaned sandboxes", Value: "kept", OK: false,
			Detail: c.held + "; to let msbd remove them, remove " + c.path + " and restart msbd"}
	}
	h.Add("store", item)
}
