package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
	ids       idMap
	maxSize   int64
	platform  v1.Platform
	insecure  map[string]bool // registries ("host[:port]", lower case) reached over plain HTTP
	keychain  authn.Keychain
	transport http.RoundTripper
}

// WithIDMap makes unpacked files owned by hostUID+uid and hostGID+gid, where uid and gid
// are the owners recorded in the image: the sandbox's user namespace maps [0, size) to
// those host ranges. An entry owned by an id >= size is refused. Without it, owners are
// kept as they are in the image.
func WithIDMap(hostUID, hostGID, size uint32) Option {
	return func(o *options) { o.ids = idMap{set: true, hostUID: hostUID, hostGID: hostGID, size: size} }
}

// WithMaxUnpackedSize limits the unpacked size of an image (the sum of its layers'
// regular file content). The default is DefaultMaxUnpackedSize. It also bounds the
// compressed size of a pulled image.
func WithMaxUnpackedSize(n int64) Option {
	return func(o *options) { o.maxSize = n }
}

// WithInsecureRegistries names registries ("host:port" as in the image reference, or
// "host" for the default port) that are reached over plain HTTP (msbd's
// --insecure-registry). Loopback registries (127.0.0.0/8, ::1, localhost) always are;
// every other registry is reached over HTTPS only, also private-range and .local hosts
// to which go-containerregistry would otherwise fall back to HTTP silently.
func WithInsecureRegistries(hosts []string) Option {
	return func(o *options) {
		for _, h := range hosts {
			if h = normalizeHost(h); h != "" {
				o.insecure[h] = true
			}
		}
	}
}

// WithKeychain sets where registry credentials come from. The default is
// authn.DefaultKeychain (the docker config and its credential helpers).
func WithKeychain(kc authn.Keychain) Option {
	return func(o *options) { o.keychain = kc }
}

// WithTransport sets the HTTP transport for registry requests (tests). Plain-HTTP
// requests to registries that are neither loopback nor listed as insecure are refused
// before they reach it.
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) { o.transport = t }
}

// WithPlatform sets the platform chosen from multi-platform images. The default is
// linux and the architecture msb was built for.
func WithPlatform(p v1.Platform) Option {
	return func(o *options) { o.platform = p }
}

// Store resolves image references and keeps their content beneath one directory: blobs
// by digest, unpacked layers by diffID, and an index of the references pulled. It is
// safe for concurrent use by one process.
type Store struct {
	dir, layersDir, metaDir, tmpDir, blobsDir string
	opts                                      options

	locks keyedMutex

	// gc is held for reading by every Get and Pull and for writing by Prune, so Prune
	// never removes what a pull is putting in place but has not recorded yet.
	gc sync.RWMutex

	refsMu sync.Mutex
	refs   map[string]refRecord // by reference as written

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
	o := options{
		maxSize:   DefaultMaxUnpackedSize,
		platform:  hostPlatform(),
		insecure:  map[string]bool{},
		keychain:  authn.DefaultKeychain,
		transport: remote.DefaultTransport,
	}
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
		blobsDir:  filepath.Join(dir, "blobs", "sha256"),
		opts:      o,
	}
	// Only the store's owner (root) may reach the layers. Their files are owned by the
	// sandboxes' mapped ids and keep the image's setuid bits, so a host user who could
	// reach them could run an image's setuid program as a mapped uid, or read what the
	// image holds. Nothing but root needs to: the overlay is mounted by root and reads
	// its lower directories with the mounter's credentials, so the sandbox's own users
	// never look the layer paths up. Older versions made dir and layers/ 0711: an
	// existing store is brought to 0700.
	for _, d := range []string{s.dir, s.layersDir, s.metaDir, s.tmpDir, s.blobsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	for _, d := range []string{s.dir, s.layersDir} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := s.checkIDMap(); err != nil {
		return nil, err
	}
	if err := s.removeLeftovers(); err != nil {
		return nil, fmt.Errorf("image store: removing leftovers of a crash: %w", err)
	}
	if err := s.loadRefs(); err != nil {
		return nil, err
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

// PullPolicy says when Pull contacts a registry, as a Sandbox's imagePullPolicy.
type PullPolicy string

const (
	// PullIfNotPresent pulls only what the store does not hold: a reference pulled
	// before, or a digest whose content is in the store, is served without contacting
	// the registry. It is the default.
	PullIfNotPresent PullPolicy = "IfNotPresent"
	// PullAlways resolves the reference at the registry every time (one HEAD or GET of
	// the manifest) and downloads the blobs the store does not hold.
	PullAlways PullPolicy = "Always"
	// PullNever never contacts a registry: an image the store does not hold is an error
	// that wraps ErrImageNotPresent.
	PullNever PullPolicy = "Never"
)

// Progress reports a layer download. It is called with Done growing, and once with
// Complete set when the layer is in the store (at once, with Done = Total, for a layer
// already there).
type Progress struct {
	Layer       string // digest of the compressed layer blob, "sha256:..."
	Total, Done int64  // bytes
	Complete    bool
}

// Get is Pull with PullIfNotPresent and no progress reports.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	return s.Pull(ctx, ref, PullIfNotPresent, nil)
}

// Pull resolves ref, fetches what the store lacks according to policy, unpacks the
// layers not unpacked yet, records the reference (see List) and returns the image.
// Blobs and layers are shared between images and fetched and unpacked once, also when
// several pulls need one at the same time. progress, if not nil, is called (never
// concurrently) while layer blobs download.
//
// Local references (oci:, oci-archive:, docker-archive:) are read from their file every
// time, whatever the policy. Content msb refuses is reported as *InvalidImageError;
// an error from a registry wraps its *transport.Error, with the registry's message.
func (s *Store) Pull(ctx context.Context, ref string, policy PullPolicy, progress func(Progress)) (*Image, error) {
	switch policy {
	case "":
		policy = PullIfNotPresent
	case PullIfNotPresent, PullAlways, PullNever:
	default:
		return nil, fmt.Errorf("image %q: unknown pull policy %q: use IfNotPresent, Always or Never", ref, policy)
	}
	src, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if src.transport == transportRegistry {
		return s.pullRegistry(ctx, ref, src.tag, policy, newProgressSink(progress))
	}

	s.gc.RLock()
	defer s.gc.RUnlock()
	r, err := resolveLocal(ctx, s, src)
	if err != nil {
		return nil, err
	}
	defer r.cleanup()

	cf, err := r.img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %q: reading config: %w", ref, err)
	}
	layers, err := r.img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	if err := s.checkConfigFile(ref, r.digest, cf, len(layers)); err != nil {
		return nil, err
	}
	srcs := make([]layerSource, len(layers))
	for i, l := range layers {
		srcs[i] = layerSource{diffID: cf.RootFS.DiffIDs[i], fetch: func(context.Context) (v1.Layer, error) { return l, nil }}
	}
	img, err := s.assemble(ctx, ref, r.digest, cf, srcs, nil)
	if err != nil {
		return nil, err
	}
	if err := s.record(ref, refRecord{Name: ref, Top: r.digest, Digest: r.digest}, img, cf); err != nil {
		return nil, err
	}
	return img, nil
}

// checkConfigFile refuses an image for another platform, or whose config does not list
// one diffID per layer.
func (s *Store) checkConfigFile(ref, digest string, cf *v1.ConfigFile, layers int) error {
	want := s.opts.platform
	if cf.OS != "" && cf.OS != want.OS {
		return fmt.Errorf("image %q is for %s, not %s", ref, cf.OS, want.OS)
	}
	if cf.Architecture != "" && cf.Architecture != want.Architecture {
		return fmt.Errorf("image %q is for %s/%s; this host runs %s", ref, cf.OS, cf.Architecture, want)
	}
	if layers != len(cf.RootFS.DiffIDs) {
		return &InvalidImageError{Layer: digest, Reason: fmt.Sprintf("manifest has %d layers but config lists %d diffIDs", layers, len(cf.RootFS.DiffIDs))}
	}
	return nil
}

// layerSource is one layer of an image being assembled: its diffID, and how to get the
// layer's content when it is not unpacked yet (a local file, or a registry download).
type layerSource struct {
	diffID v1.Hash
	fetch  func(ctx context.Context) (v1.Layer, error)
}

// downloadJobs is how many layers of one image are fetched at the same time.
const downloadJobs = 3

// assemble makes sure every layer of an image is unpacked and returns the image. Layers
// are fetched concurrently (up to downloadJobs) and unpacked in order, lowest first, so
// the size limit is applied as the image grows; a failure cancels the fetches under way.
func (s *Store) assemble(ctx context.Context, ref, digest string, cf *v1.ConfigFile, srcs []layerSource, prog *progressSink) (*Image, error) {
	img := &Image{
		Ref:    ref,
		Digest: digest,
		Config: Config{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	type fetched struct {
		l   v1.Layer
		err error
	}
	ready := make([]chan fetched, len(srcs))
	sem := make(chan struct{}, downloadJobs)
	for i, src := range srcs {
		ready[i] = make(chan fetched, 1)
		if src.diffID.Algorithm == "sha256" && s.hasLayer(src.diffID.Hex) {
			ready[i] <- fetched{}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ready[i] <- fetched{err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			l, err := src.fetch(ctx)
			ready[i] <- fetched{l: l, err: err}
		}()
	}

	for i, src := range srcs {
		var f fetched
		select {
		case f = <-ready[i]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err != nil {
			return nil, fmt.Errorf("image %q: %w", ref, f.err)
		}
		fetch := src.fetch
		if f.l != nil {
			fetch = func(context.Context) (v1.Layer, error) { return f.l, nil }
		}
		budget := s.opts.maxSize - img.Size
		dir, size, err := s.layer(ctx, fetch, src.diffID, budget)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", ref, err)
		}
		img.Size += size
		if img.Size > s.opts.maxSize {
			return nil, fmt.Errorf("image %q: %w", ref, &InvalidImageError{Layer: src.diffID.String(), Reason: fmt.Sprintf("image unpacks to more than the limit of %d bytes", s.opts.maxSize)})
		}
		img.Layers = append(img.Layers, dir)
	}
	return img, nil
}

func (s *Store) hasLayer(diffIDHex string) bool {
	st, err := os.Lstat(filepath.Join(s.layersDir, diffIDHex))
	return err == nil && st.IsDir()
}

type layerMeta struct {
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// layer returns the unpacked directory of a layer and its size, fetching and unpacking
// it first if needed. budget is what is left of the image's size limit.
func (s *Store) layer(ctx context.Context, fetch func(context.Context) (v1.Layer, error), diffID v1.Hash, budget int64) (string, int64, error) {
	if diffID.Algorithm != "sha256" {
		return "", 0, &InvalidImageError{Layer: diffID.String(), Reason: "unsupported digest algorithm"}
	}
	dir := filepath.Join(s.layersDir, diffID.Hex)
	metaPath := filepath.Join(s.metaDir, diffID.Hex+".json")

	unlock, err := s.locks.lock(ctx, "layer/"+diffID.Hex)
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

	l, err := fetch(ctx)
	if err != nil {
		return "", 0, err
	}
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
