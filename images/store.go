package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultMaxUnpackedSize is the default limit on the unpacked size of one image.
const DefaultMaxUnpackedSize int64 = 10 << 30

// Config is what a sandbox needs from an image's config.
type Config struct {
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
}

// Image is an image resolved and unpacked on disk.
type Image struct {
	Ref    string   // as the user wrote it
	Digest string   // digest of the image manifest that was resolved, "sha256:..."
	Config Config   // from the image config
	Layers []string // absolute paths of unpacked layer directories, lowest first
	Size   int64    // unpacked bytes (regular file content of all layers)
}

// Option configures a Store.
type Option func(*options)

type options struct {
	ids     idMap
	maxSize int64
}

// WithIDMap makes unpacked files owned by hostUID+uid and hostGID+gid, where uid and gid
// are the owners recorded in the image: the sandbox's user namespace maps [0, size) to
// those host ranges. An entry owned by an id >= size is refused. Without it, owners are
// kept as they are in the image.
func WithIDMap(hostUID, hostGID, size uint32) Option {
	return func(o *options) { o.ids = idMap{set: true, hostUID: hostUID, hostGID: hostGID, size: size} }
}

// WithMaxUnpackedSize limits the unpacked size of an image (the sum of its layers'
// regular file content). The default is DefaultMaxUnpackedSize.
func WithMaxUnpackedSize(n int64) Option {
	return func(o *options) { o.maxSize = n }
}

// Store resolves image references and keeps their unpacked layers beneath one
// directory. It is safe for concurrent use by one process.
type Store struct {
	dir, layersDir, metaDir, tmpDir string
	opts                            options

	locks keyedMutex

	unpacks atomic.Int64 // layers unpacked, for tests
}

type idMapFile struct {
	Set     bool   `json:"set"`
	HostUID uint32 `json:"hostUID"`
	HostGID uint32 `json:"hostGID"`
	Size    uint32 `json:"size"`
}

// New opens (creating if needed) the store in dir, normally <state>/images. Temporary
// directories left by a crash are removed. A store keeps the id map it was first used
// with, because its layers are owned accordingly; opening it with another is an error.
func New(dir string, opts ...Option) (*Store, error) {
	o := options{maxSize: DefaultMaxUnpackedSize}
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:       dir,
		layersDir: filepath.Join(dir, "layers"),
		metaDir:   filepath.Join(dir, "meta"),
		tmpDir:    filepath.Join(dir, "tmp"),
		opts:      o,
	}
	// Layer directories must be reachable by whoever mounts the overlay, but not listable.
	for _, d := range []string{s.dir, s.layersDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	for _, d := range []string{s.metaDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := s.checkIDMap(); err != nil {
		return nil, err
	}
	if err := s.removeLeftovers(); err != nil {
		return nil, fmt.Errorf("image store: removing leftovers of a crash: %w", err)
	}
	return s, nil
}

func (s *Store) checkIDMap() error {
	want := idMapFile{Set: s.opts.ids.set, HostUID: s.opts.ids.hostUID, HostGID: s.opts.ids.hostGID, Size: s.opts.ids.size}
	p := filepath.Join(s.dir, "idmap.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		b, _ = json.Marshal(want)
		return writeFileAtomic(p, b)
	}
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	var have idMapFile
	if err := json.Unmarshal(b, &have); err != nil {
		return fmt.Errorf("image store: %s: %w", p, err)
	}
	if have != want {
		return fmt.Errorf("image store %s holds layers unpacked for id map %+v, not %+v: use the same map or remove the directory", s.dir, have, want)
	}
	return nil
}

func (s *Store) removeLeftovers() error {
	ents, err := os.ReadDir(s.layersDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if err := os.RemoveAll(filepath.Join(s.layersDir, e.Name())); err != nil {
				return err
			}
		}
	}
	ents, err = os.ReadDir(s.tmpDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Get resolves ref, unpacks the layers not unpacked yet, and returns the image. Layers
// are shared between images and unpacked once, also when several Gets need one at the
// same time. Content msb refuses is reported as *InvalidImageError.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	r, err := resolve(ctx, s, ref)
	if err != nil {
		return nil, err
	}
	defer r.cleanup()

	cf, err := r.img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %q: reading config: %w", ref, err)
	}
	if cf.OS != "" && cf.OS != "linux" {
		return nil, fmt.Errorf("image %q is for %s, not linux", ref, cf.OS)
	}
	if cf.Architecture != "" && cf.Architecture != hostPlatform().Architecture {
		return nil, fmt.Errorf("image %q is for %s/%s; this host runs %s", ref, cf.OS, cf.Architecture, hostPlatform())
	}
	layers, err := r.img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, &InvalidImageError{Layer: r.digest, Reason: fmt.Sprintf("manifest has %d layers but config lists %d diffIDs", len(layers), len(cf.RootFS.DiffIDs))}
	}
	img := &Image{
		Ref:    ref,
		Digest: r.digest,
		Config: Config{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
	}
	for i, l := range layers {
		diffID := cf.RootFS.DiffIDs[i]
		budget := s.opts.maxSize - img.Size
		dir, size, err := s.layer(ctx, l, diffID, budget)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", ref, err)
		}
		img.Size += size
		if img.Size > s.opts.maxSize {
			return nil, fmt.Errorf("image %q: %w", ref, &InvalidImageError{Layer: diffID.String(), Reason: fmt.Sprintf("image unpacks to more than the limit of %d bytes", s.opts.maxSize)})
		}
		img.Layers = append(img.Layers, dir)
	}
	return img, nil
}

type layerMeta struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// layer returns the unpacked directory of a layer and its size, unpacking it first if
// needed. budget is what is left of the image's size limit.
func (s *Store) layer(ctx context.Context, l v1.Layer, diffID v1.Hash, budget int64) (string, int64, error) {
	if diffID.Algorithm != "sha256" {
		return "", 0, &InvalidImageError{Layer: diffID.String(), Reason: "unsupported digest algorithm"}
	}
	dir := filepath.Join(s.layersDir, diffID.Hex)
	metaPath := filepath.Join(s.metaDir, diffID.Hex+".json")

	unlock, err := s.locks.lock(ctx, diffID.Hex)
	if err != nil {
		return "", 0, err
	}
	defer unlock()

	if st, err := os.Lstat(dir); err == nil && st.IsDir() {
		if m, err := readMeta(metaPath); err == nil {
			return dir, m.Size, nil
		}
		size, err := dirSize(dir)
		return dir, size, err
	}
	if budget <= 0 {
		return "", 0, &InvalidImageError{Layer: diffID.String(), Reason: fmt.Sprintf("image unpacks to more than the limit of %d bytes", s.opts.maxSize)}
	}

	tmp, err := os.MkdirTemp(s.layersDir, ".tmp-")
	if err != nil {
		return "", 0, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	uid, gid, _ := s.opts.ids.mapIDs(0, 0)
	if err := os.Chown(tmp, uid, gid); err != nil {
		return "", 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", 0, err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return "", 0, err
	}
	defer root.Close()

	rc, err := l.Uncompressed()
	if err != nil {
		return "", 0, &InvalidImageError{Layer: diffID.String(), Reason: "opening layer: " + err.Error()}
	}
	defer rc.Close()
	s.unpacks.Add(1)
	got, size, err := unpackTar(ctx, root, rc, diffID.String(), s.opts.ids, budget, s.opts.maxSize)
	if err != nil {
		return "", 0, err
	}
	if got != diffID.String() {
		return "", 0, &InvalidImageError{Layer: diffID.String(), Reason: fmt.Sprintf("content does not match its diffID (got %s): the image is corrupt", got)}
	}
	b, _ := json.Marshal(layerMeta{DiffID: diffID.String(), Size: size})
	if err := writeFileAtomic(metaPath, b); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", 0, fmt.Errorf("layer %s: %w", shortDigest(diffID.String()), err)
	}
	done = true
	return dir, size, nil
}

func readMeta(p string) (layerMeta, error) {
	var m layerMeta
	b, err := os.ReadFile(p)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// dirSize adds up the regular files beneath dir (for a layer whose meta file was lost).
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p))
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// keyedMutex holds one lock per key, created on demand and dropped when unused.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // holds a token while locked
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
