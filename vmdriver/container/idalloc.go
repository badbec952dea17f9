package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"msb.dev/msb/vmdriver"
)

// Host id ranges per sandbox. --uid-base/--uid-size (Options.HostUID,
// HostGID, IDMapSize) give one span of host ids, cut into slots of SlotSize.
// Slot 0 is the shared range: image layers are unpacked owned by it. Every
// sandbox gets a slot of its own, 1 and up: its user namespace maps its ids
// 0..SlotSize-1 to that slot and is owned by the slot's first uid, so no
// two sandboxes share a host uid, and the image layers are shown to it
// through idmapped mounts (see idmapped.go).
//
// The allocation is recorded in the sandbox directory (ids.json), so it
// survives an msbd restart and is found again when msbd adopts the sandbox;
// it is released when the directory is purged. Where the span holds a
// single slot or the kernel cannot make idmapped mounts, sandboxes run in
// the shared range (their user namespaces still have owners of their own)
// and Driver.SharedIDReason says why.

// SlotSize is the number of ids of one sandbox's range.
const SlotSize = 65536

// sandboxIDs is a sandbox's recorded id range.
type sandboxIDs struct {
	// Slot is the allocated slot (1..), whose first uid owns the sandbox's
	// user namespace.
	Slot uint32 `json:"slot"`
	// UID and GID are the host ids the sandbox's 0..Size-1 map to: the
	// slot's, or the shared range's (Shared).
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   uint32 `json:"size"`
	Shared bool   `json:"shared,omitempty"`
	// Owner is the host uid owning the user namespace (and OwnerGID its group).
	Owner    uint32 `json:"owner"`
	OwnerGID uint32 `json:"ownerGID"`
}

// idAllocator hands out slots. Its state is rebuilt from the records in
// the sandbox directories.
type idAllocator struct {
	uidBase, gidBase uint32
	slots            uint32 // in the span, including the shared slot 0
	// dirs hold the sandbox directories whose records count: the
	// container driver's, and the microVM driver's when it shares the span
	// (see IDRanges).
	dirs []string

	mu     sync.Mutex
	loaded bool
	used   map[uint32]string // slot -> sandbox id
}

const idsFile = "ids.json"

func newIDAllocator(sandboxesDir string, uidBase, gidBase, span uint32) *idAllocator {
	return &idAllocator{uidBase: uidBase, gidBase: gidBase, slots: span / SlotSize, dirs: []string{sandboxesDir}, used: map[uint32]string{}}
}

// addDir makes the records under sandboxesDir count too (loaded now if the
// others already are).
func (a *idAllocator) addDir(sandboxesDir string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.dirs {
		if d == sandboxesDir {
			return nil
		}
	}
	a.dirs = append(a.dirs, sandboxesDir)
	if a.loaded {
		return a.loadDir(sandboxesDir)
	}
	return nil
}

// perSandbox reports whether the span has room for sandbox slots at all.
func (a *idAllocator) perSandbox() bool { return a.slots >= 2 }

// load reads every record once.
func (a *idAllocator) load() error {
	if a.loaded {
		return nil
	}
	for _, dir := range a.dirs {
		if err := a.loadDir(dir); err != nil {
			return err
		}
	}
	a.loaded = true
	return nil
}

func (a *idAllocator) loadDir(sandboxesDir string) error {
	entries, err := os.ReadDir(sandboxesDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		ids, ok, err := readIDs(filepath.Join(sandboxesDir, e.Name()))
		if err != nil {
			return err
		}
		if ok && ids.Slot != 0 {
			a.used[ids.Slot] = e.Name()
		}
	}
	return nil
}

// get returns id's recorded range, allocating and recording one if it has
// none. shared makes a new record use the shared range (the slot still
// gives the namespace its owner). dir is the sandbox directory.
func (a *idAllocator) get(id, dir string, shared bool) (sandboxIDs, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.load(); err != nil {
		return sandboxIDs{}, err
	}
	ids, ok, err := readIDs(dir)
	if err != nil || ok {
		return ids, err
	}
	slot := uint32(0)
	if a.perSandbox() {
		for s := uint32(1); s < a.slots; s++ {
			if _, taken := a.used[s]; !taken {
				slot = s
				break
			}
		}
		if slot == 0 {
			return sandboxIDs{}, fmt.Errorf("no free host id range: all %d sandbox ranges of --uid-size are in use; delete sandboxes or give msbd a larger --uid-size (%d ids per sandbox)", a.slots-1, SlotSize)
		}
	}
	ids = sandboxIDs{
		Slot: slot, Size: SlotSize,
		Owner: a.uidBase + slot*SlotSize, OwnerGID: a.gidBase + slot*SlotSize,
	}
	if shared || slot == 0 {
		ids.UID, ids.GID, ids.Shared = a.uidBase, a.gidBase, true
	} else {
		ids.UID, ids.GID = ids.Owner, ids.OwnerGID
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return sandboxIDs{}, err
	}
	if err := writeFileAtomic(filepath.Join(dir, idsFile), append(b, '\n'), 0o600); err != nil {
		return sandboxIDs{}, err
	}
	if slot != 0 {
		a.used[slot] = id
	}
	return ids, nil
}

// release forgets id's slot (its directory is gone).
func (a *idAllocator) release(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for s, owner := range a.used {
		if owner == id {
			delete(a.used, s)
		}
	}
}

// readIDs reads dir's record; ok is false where there is none.
func readIDs(dir string) (ids sandboxIDs, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, idsFile))
	if errors.Is(err, os.ErrNotExist) {
		return ids, false, nil
	}
	if err != nil {
		return ids, false, err
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		return ids, false, fmt.Errorf("%s: %w", filepath.Join(dir, idsFile), err)
	}
	if ids.Size == 0 {
		return ids, false, fmt.Errorf("%s: size 0", filepath.Join(dir, idsFile))
	}
	return ids, true, nil
}

// sandboxGID is the host gid of id's root: recorded, or the shared one.
func (d *Driver) sandboxGID(id string) uint32 {
	if ids, ok, err := readIDs(d.SandboxDir(id)); err == nil && ok {
		return ids.GID
	}
	return d.opts.HostGID
}

var _ vmdriver.IsolationAdvisor = (*Driver)(nil)

// IsolationWarnings implements vmdriver.IsolationAdvisor: a sandbox that
// runs in the shared host id range (see SharedIDReason, or a writable
// layer made by an older msbd) shares its host uid with every other such
// sandbox.
func (d *Driver) IsolationWarnings(id string) []string {
	ids, ok, err := readIDs(d.SandboxDir(id))
	if err != nil || !ok || !ids.Shared {
		return nil
	}
	reason := d.sharedReason
	if reason == "" {
		reason = "its writable layer was made by an older msbd, owned by the shared range; recreate the sandbox for a range of its own"
	}
	return []string{"the sandbox runs in the host id range other sandboxes share, not in one of its own: " + reason}
}

// IDRanges is the container driver's host id allocator, for another
// backend on the same --uid-base/--uid-size span (the microVM driver's
// Host, see Host.ShareIDRanges): one allocator over both drivers' records,
// so a container and a microVM never get the same slot.
type IDRanges struct{ d *Driver }

// IDRanges returns d's allocator for sharing.
func (d *Driver) IDRanges() *IDRanges { return &IDRanges{d: d} }

// HostIDs are a sandbox's recorded host ids: its ids 0..Size-1 are host
// UID.. and GID..; Shared when that is the range every such sandbox shares.
type HostIDs struct {
	UID, GID, Size uint32
	Shared         bool
}
