package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// refsFile is the index of references pulled: refs.json beneath the store directory.
const refsFile = "refs.json"

const refsVersion = 1

type refsDoc struct {
	Version int                  `json:"version"`
	Refs    map[string]refRecord `json:"refs"`
}

// refRecord is what the store knows about a reference it pulled or imported. A record
// is written only once every blob and layer it names is in the store.
type refRecord struct {
	Name    string    `json:"name"`            // canonical name (registry/repo:tag or @digest), or the local reference
	Top     string    `json:"top"`             // digest the reference resolved to: an index or an image manifest
	Digest  string    `json:"digest"`          // image manifest chosen for the platform
	Blobs   []string  `json:"blobs,omitempty"` // every blob of the image in blobs/ (none for local references)
	Layers  []string  `json:"layers"`          // diffIDs, lowest first
	Size    int64     `json:"size"`            // unpacked bytes
	Created time.Time `json:"created"`         // from the image config
	Pulled  time.Time `json:"pulled"`          // when the reference was recorded with this content
}

// sameContent reports whether two records describe the same image, Pulled aside.
func sameContent(a, b refRecord) bool {
	return a.Name == b.Name && a.Top == b.Top && a.Digest == b.Digest && a.Size == b.Size &&
		a.Created.Equal(b.Created) && slices.Equal(a.Blobs, b.Blobs) && slices.Equal(a.Layers, b.Layers)
}

// ImageInfo describes an image the store holds, for `msbctl image ls`.
type ImageInfo struct {
	Ref     string    // the reference as written
	Name    string    // canonical name, e.g. index.docker.io/library/python:3.12
	Digest  string    // image manifest digest, as Image.Digest
	Size    int64     // unpacked bytes
	Layers  []string  // diffIDs, lowest first
	Created time.Time // image creation time from its config
	Pulled  time.Time // when the reference was recorded with this content (first pulled, or moved)
}

// PruneResult says what Prune removed.
type PruneResult struct {
	Blobs  int   // blobs removed from blobs/
	Layers int   // unpacked layers removed
	Bytes  int64 // bytes freed (blob sizes plus unpacked layer content)
}

func (s *Store) refsPath() string { return filepath.Join(s.dir, refsFile) }

func (s *Store) loadRefs() error {
	s.refs = map[string]refRecord{}
	b, err := os.ReadFile(s.refsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	var doc refsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("image store: %s is damaged (%v): remove it; images are pulled again on use", s.refsPath(), err)
	}
	if doc.Version != refsVersion {
		return fmt.Errorf("image store: %s has version %d, this msb reads version %d", s.refsPath(), doc.Version, refsVersion)
	}
	if doc.Refs != nil {
		s.refs = doc.Refs
	}
	return nil
}

// saveRefs writes the index; the caller holds refsMu.
func (s *Store) saveRefs() error {
	b, err := json.MarshalIndent(refsDoc{Version: refsVersion, Refs: s.refs}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.refsPath(), b)
}

func (s *Store) refRecord(ref string) (refRecord, bool) {
	s.refsMu.Lock()
	defer s.refsMu.Unlock()
	r, ok := s.refs[ref]
	return r, ok
}

// record completes rec from the assembled image and stores it under ref.
func (s *Store) record(ref string, rec refRecord, img *Image, cf *v1.ConfigFile) error {
	rec.Size = img.Size
	rec.Created = cf.Created.Time.UTC()
	rec.Pulled = time.Now().UTC().Truncate(time.Second)
	rec.Layers = make([]string, len(cf.RootFS.DiffIDs))
	for i, d := range cf.RootFS.DiffIDs {
		rec.Layers[i] = d.String()
	}
	s.refsMu.Lock()
	defer s.refsMu.Unlock()
	if old, ok := s.refs[ref]; ok && sameContent(old, rec) {
		return nil // a cache hit writes nothing
	}
	s.refs[ref] = rec
	if err := s.saveRefs(); err != nil {
		return fmt.Errorf("image store: recording %q: %w", ref, err)
	}
	return nil
}

// List returns the images the store holds, by reference as written, sorted.
func (s *Store) List() ([]ImageInfo, error) {
	s.refsMu.Lock()
	defer s.refsMu.Unlock()
	out := make([]ImageInfo, 0, len(s.refs))
	for ref, r := range s.refs {
		out = append(out, ImageInfo{
			Ref: ref, Name: r.Name, Digest: r.Digest, Size: r.Size,
			Layers: append([]string(nil), r.Layers...), Created: r.Created, Pulled: r.Pulled,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Remove forgets an image: the reference as written, or else every reference with that
// canonical name, or else every reference to that manifest digest ("sha256:..."). Its
// blobs and layers stay until Prune. An unknown reference is an error wrapping
// ErrImageNotPresent.
func (s *Store) Remove(ref string) error {
	s.refsMu.Lock()
	defer s.refsMu.Unlock()
	match := func(string, refRecord) bool { return false }
	if _, ok := s.refs[ref]; ok {
		match = func(r string, _ refRecord) bool { return r == ref }
	} else if strings.HasPrefix(ref, "sha256:") {
		match = func(_ string, rec refRecord) bool { return rec.Digest == ref || rec.Top == ref }
	} else if n, err := name.ParseReference(strings.TrimPrefix(ref, "docker://")); err == nil {
		match = func(_ string, rec refRecord) bool { return rec.Name == n.Name() }
	}
	var gone []string
	for r, rec := range s.refs {
		if match(r, rec) {
			gone = append(gone, r)
		}
	}
	if len(gone) == 0 {
		return fmt.Errorf("image %q is %w", ref, ErrImageNotPresent)
	}
	old := make(map[string]refRecord, len(gone))
	for _, r := range gone {
		old[r] = s.refs[r]
		delete(s.refs, r)
	}
	if err := s.saveRefs(); err != nil {
		for r, rec := range old {
			s.refs[r] = rec
		}
		return fmt.Errorf("image store: removing %q: %w", ref, err)
	}
	return nil
}

// Prune removes the blobs and unpacked layers that no recorded reference uses, except
// layers for which inUse (given the layer directory, as in Image.Layers) reports true:
// a layer a sandbox still mounts is never removed, even when its reference was. Pulls
// wait while Prune runs.
func (s *Store) Prune(inUse func(layerDir string) bool) (PruneResult, error) {
	s.gc.Lock()
	defer s.gc.Unlock()

	keepBlobs, keepLayers := map[string]bool{}, map[string]bool{}
	s.refsMu.Lock()
	for _, r := range s.refs {
		for _, d := range r.Blobs {
			keepBlobs[strings.TrimPrefix(d, "sha256:")] = true
		}
		for _, d := range r.Layers {
			keepLayers[strings.TrimPrefix(d, "sha256:")] = true
		}
	}
	s.refsMu.Unlock()

	var res PruneResult
	ents, err := os.ReadDir(s.blobsDir)
	if err != nil {
		return res, err
	}
	for _, e := range ents {
		if keepBlobs[e.Name()] {
			continue
		}
		p := filepath.Join(s.blobsDir, e.Name())
		st, err := os.Lstat(p)
		if err != nil {
			return res, err
		}
		if err := os.Remove(p); err != nil {
			return res, fmt.Errorf("prune: %w", err)
		}
		res.Blobs++
		res.Bytes += st.Size()
	}

	ents, err = os.ReadDir(s.layersDir)
	if err != nil {
		return res, err
	}
	for _, e := range ents {
		hex := e.Name()
		if strings.HasPrefix(hex, ".tmp-") || keepLayers[hex] {
			continue
		}
		dir := filepath.Join(s.layersDir, hex)
		if inUse != nil && inUse(dir) {
			continue
		}
		metaPath := filepath.Join(s.metaDir, hex+".json")
		size := int64(0)
		if m, err := readMeta(metaPath); err == nil {
			size = m.Size
		}
		// Renamed first, so a crash halfway leaves a .tmp- directory that New removes,
		// never a partial layer under its diffID.
		gone, err := os.MkdirTemp(s.layersDir, ".tmp-prune-")
		if err != nil {
			return res, err
		}
		if err := os.Rename(dir, filepath.Join(gone, "layer")); err != nil {
			os.Remove(gone)
			return res, fmt.Errorf("prune: %w", err)
		}
		if err := os.RemoveAll(gone); err != nil {
			return res, fmt.Errorf("prune: %w", err)
		}
		os.Remove(metaPath)
		res.Layers++
		res.Bytes += size
	}
	return res, nil
}
