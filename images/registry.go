package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Limits on blobs that are read into memory.
const (
	maxManifestSize = 4 << 20
	maxConfigSize   = 16 << 20
)

// errNotCached is returned by a pull that may not contact the registry (PullNever) and
// needs something the store does not hold.
var errNotCached = errors.New("not in the store")

// normalizeHost turns an --insecure-registry value into the form compared with a
// reference's registry: lower case, without a scheme or a trailing slash.
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(h, "http://")
	h = strings.TrimPrefix(h, "https://")
	return strings.TrimSuffix(h, "/")
}

// plainHTTPAllowed decides whether msb may talk plain HTTP to a registry host
// ("host[:port]", as in a reference or a request URL): only to loopback (127.0.0.0/8,
// ::1, localhost) and to registries listed in WithInsecureRegistries.
// go-containerregistry also uses HTTP for private-range and .local hosts; msb does not.
func (o *options) plainHTTPAllowed(host string) bool {
	host = normalizeHost(host)
	if o.insecure[host] {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// httpGuard refuses plain-HTTP requests to hosts where plainHTTPAllowed says no, so
// neither go-containerregistry's HTTP fallback nor a redirect can send a request (and
// the credentials in it) unencrypted.
type httpGuard struct {
	allow func(host string) bool
	inner http.RoundTripper
}

func (g *httpGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.allow(req.URL.Host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("refusing plain HTTP to %s: registries other than loopback are reached over HTTPS only; if this one serves plain HTTP, name it with --insecure-registry %s", req.URL.Host, req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

// parseRegistryRef parses a registry reference with Docker Hub defaults
// ("python:3.12" is index.docker.io/library/python:3.12), marking it insecure (plain
// HTTP allowed) only when plainHTTPAllowed says so.
func (s *Store) parseRegistryRef(r string) (name.Reference, error) {
	ref, err := name.ParseReference(r)
	if err != nil {
		return nil, err
	}
	if s.opts.plainHTTPAllowed(ref.Context().RegistryStr()) {
		return name.ParseReference(r, name.Insecure)
	}
	return ref, nil
}

func (s *Store) remotePuller() (*remote.Puller, error) {
	return remote.NewPuller(
		remote.WithTransport(&httpGuard{allow: s.opts.plainHTTPAllowed, inner: s.opts.transport}),
		remote.WithAuthFromKeychain(s.opts.keychain),
		remote.WithPlatform(s.opts.platform),
		remote.WithUserAgent("msb"),
	)
}

// pull is the state of one registry pull.
type pull struct {
	s      *Store
	raw    string         // the reference as written
	ref    name.Reference // parsed
	online bool           // may contact the registry
	rp     *remote.Puller
	prog   *progressSink
}

// pullRegistry pulls a registry reference (r is raw without a "docker://" prefix).
func (s *Store) pullRegistry(ctx context.Context, raw, r string, policy PullPolicy, prog *progressSink) (*Image, error) {
	ref, err := s.parseRegistryRef(r)
	if err != nil {
		return nil, fmt.Errorf("image %q is not a valid reference: %w", raw, err)
	}
	// One pull per image name at a time: concurrent pulls of a tag resolve it once.
	unlock, err := s.locks.lock(ctx, "ref/"+ref.Name())
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.gc.RLock()
	defer s.gc.RUnlock()

	rp, err := s.remotePuller()
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", raw, err)
	}
	p := &pull{s: s, raw: raw, ref: ref, online: policy != PullNever, rp: rp, prog: prog}

	// What the store already knows: the digest this reference resolved to when it was
	// pulled, or the digest it names.
	var top v1.Hash
	if rec, ok := s.refRecord(raw); ok && policy != PullAlways {
		top, _ = v1.NewHash(rec.Top)
	}
	if d, ok := ref.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", raw, err)
		}
		top = h
	}
	if policy == PullNever && top == (v1.Hash{}) {
		return nil, fmt.Errorf("image %q is %w and imagePullPolicy is Never", raw, ErrImageNotPresent)
	}

	if top == (v1.Hash{}) {
		// A tag to resolve at the registry. Under Always a HEAD suffices when the
		// manifest it names is in the store already.
		if policy == PullAlways {
			if d, err := rp.Head(ctx, ref); err == nil && d.Digest.Algorithm == "sha256" && s.hasBlob(d.Digest.Hex) {
				top = d.Digest
			}
		}
		if top == (v1.Hash{}) {
			d, err := rp.Get(ctx, ref)
			if err != nil {
				return nil, fmt.Errorf("image %q: %w", raw, err)
			}
			if len(d.Manifest) > maxManifestSize {
				return nil, fmt.Errorf("image %q: %w", raw, &InvalidImageError{Layer: d.Digest.String(), Reason: fmt.Sprintf("manifest is larger than %d bytes", maxManifestSize)})
			}
			sum := sha256.Sum256(d.Manifest)
			top = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
			if err := s.writeBlob(ctx, top, bytes.NewReader(d.Manifest), int64(len(d.Manifest)), nil); err != nil {
				return nil, fmt.Errorf("image %q: %w", raw, err)
			}
		}
	}

	img, err := p.image(ctx, top)
	if errors.Is(err, errNotCached) {
		return nil, fmt.Errorf("image %q is %w and imagePullPolicy is Never", raw, ErrImageNotPresent)
	}
	return img, err
}

// image resolves top (an index or an image manifest) to an image manifest for the
// platform, fetches its config and layers as needed, and records the reference.
func (p *pull) image(ctx context.Context, top v1.Hash) (*Image, error) {
	raw := p.raw
	md := top
	m, err := p.manifest(ctx, md)
	if err != nil {
		return nil, p.wrap(err)
	}
	for depth := 0; ; depth++ {
		kind, err := manifestKind(m)
		if err != nil {
			return nil, p.wrap(&InvalidImageError{Layer: md.String(), Reason: err.Error()})
		}
		if kind == kindImage {
			break
		}
		if depth >= 4 {
			return nil, p.wrap(&InvalidImageError{Layer: md.String(), Reason: "image indexes nested too deeply"})
		}
		im, err := v1.ParseIndexManifest(bytes.NewReader(m))
		if err != nil {
			return nil, p.wrap(&InvalidImageError{Layer: md.String(), Reason: "parsing index: " + err.Error()})
		}
		d, err := pickPlatform(p.s.opts.platform, im.Manifests)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", raw, err)
		}
		md = d.Digest
		if m, err = p.manifest(ctx, md); err != nil {
			return nil, p.wrap(err)
		}
	}
	man, err := v1.ParseManifest(bytes.NewReader(m))
	if err != nil {
		return nil, p.wrap(&InvalidImageError{Layer: md.String(), Reason: "parsing manifest: " + err.Error()})
	}
	if man.Config.Size > maxConfigSize {
		return nil, p.wrap(&InvalidImageError{Layer: man.Config.Digest.String(), Reason: fmt.Sprintf("config is larger than %d bytes", maxConfigSize)})
	}
	var total int64
	for _, l := range man.Layers {
		if total += l.Size; l.Size < 0 || total > p.s.opts.maxSize {
			return nil, p.wrap(&InvalidImageError{Layer: l.Digest.String(), Reason: fmt.Sprintf("compressed layers are larger than the limit of %d bytes", p.s.opts.maxSize)})
		}
	}
	cpath, err := p.blob(ctx, man.Config, "")
	if err != nil {
		return nil, p.wrap(err)
	}
	cb, err := readVerified(cpath, man.Config.Digest)
	if err != nil {
		return nil, p.wrap(err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return nil, p.wrap(&InvalidImageError{Layer: man.Config.Digest.String(), Reason: "parsing config: " + err.Error()})
	}
	if err := p.s.checkConfigFile(raw, md.String(), cf, len(man.Layers)); err != nil {
		return nil, err
	}

	srcs := make([]layerSource, len(man.Layers))
	for i, desc := range man.Layers {
		srcs[i] = layerSource{diffID: cf.RootFS.DiffIDs[i], fetch: func(ctx context.Context) (v1.Layer, error) {
			path, err := p.blob(ctx, desc, desc.Digest.String())
			if err != nil {
				return nil, err
			}
			return partial.CompressedToLayer(&blobLayer{path: path, desc: desc})
		}}
		if p.s.hasLayer(srcs[i].diffID.Hex) {
			p.prog.report(Progress{Layer: desc.Digest.String(), Total: desc.Size, Done: desc.Size, Complete: true})
		}
	}
	img, err := p.s.assemble(ctx, raw, md.String(), cf, srcs, p.prog)
	if err != nil {
		return nil, err
	}
	blobs := []string{top.String()}
	if md != top {
		blobs = append(blobs, md.String())
	}
	blobs = append(blobs, man.Config.Digest.String())
	rec := refRecord{Name: p.ref.Name(), Top: top.String(), Digest: md.String(), Blobs: blobs}
	if err := p.s.record(raw, rec, img, cf); err != nil {
		return nil, err
	}
	// Once unpacked (and its diffID checked), a compressed layer blob is not
	// needed again: a later pull of any image with this layer skips it by
	// diffID. Dropping it keeps one copy of each layer on disk.
	for i, l := range man.Layers {
		if p.s.hasLayer(cf.RootFS.DiffIDs[i].Hex) {
			p.s.dropBlob(ctx, l.Digest)
		}
	}
	return img, nil
}

// dropBlob removes a blob under its lock, so no pull is writing or reading it.
func (s *Store) dropBlob(ctx context.Context, d v1.Hash) {
	unlock, err := s.locks.lock(ctx, "blob/"+d.Hex)
	if err != nil {
		return
	}
	defer unlock()
	os.Remove(s.blobPath(d.Hex))
}

func (p *pull) wrap(err error) error {
	return fmt.Errorf("image %q: %w", p.raw, err)
}

type manifestKindT int

const (
	kindImage manifestKindT = iota
	kindIndex
)

// manifestKind tells an image manifest from an index by its media type, or by its
// fields when it has none (the mediaType field is optional in OCI manifests).
func manifestKind(b []byte) (manifestKindT, error) {
	var m struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return 0, fmt.Errorf("manifest is not JSON: %v", err)
	}
	switch m.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		return kindIndex, nil
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return kindImage, nil
	case "":
		if m.SchemaVersion == 2 && m.Manifests != nil {
			return kindIndex, nil
		}
		if m.SchemaVersion == 2 && m.Config != nil {
			return kindImage, nil
		}
	}
	if m.SchemaVersion == 1 {
		return 0, errors.New("Docker schema 1 manifests are not supported: push the image again with a current client")
	}
	return 0, fmt.Errorf("unsupported manifest media type %q", m.MediaType)
}

// manifest returns the manifest d from the store, fetching it by digest if needed.
func (p *pull) manifest(ctx context.Context, d v1.Hash) ([]byte, error) {
	if d.Algorithm != "sha256" {
		return nil, &InvalidImageError{Layer: d.String(), Reason: "unsupported digest algorithm"}
	}
	path := p.s.blobPath(d.Hex)
	if b, err := readVerified(path, d); err == nil {
		return b, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		// A damaged copy: drop it and fetch it again.
		os.Remove(path)
	}
	if !p.online {
		return nil, errNotCached
	}
	unlock, err := p.s.locks.lock(ctx, "blob/"+d.Hex)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if b, err := readVerified(path, d); err == nil {
		return b, nil
	}
	desc, err := p.rp.Get(ctx, p.ref.Context().Digest(d.String()))
	if err != nil {
		return nil, err
	}
	if len(desc.Manifest) > maxManifestSize {
		return nil, &InvalidImageError{Layer: d.String(), Reason: fmt.Sprintf("manifest is larger than %d bytes", maxManifestSize)}
	}
	if err := p.s.writeBlobLocked(ctx, d, bytes.NewReader(desc.Manifest), int64(len(desc.Manifest)), nil); err != nil {
		return nil, err
	}
	return desc.Manifest, nil
}

// blob returns the path of blob desc in the store, downloading it if needed. layer, if
// not empty, names the blob in progress reports.
func (p *pull) blob(ctx context.Context, desc v1.Descriptor, layer string) (string, error) {
	d := desc.Digest
	if d.Algorithm != "sha256" {
		return "", &InvalidImageError{Layer: d.String(), Reason: "unsupported digest algorithm"}
	}
	path := p.s.blobPath(d.Hex)
	stored := func() (string, error) {
		if layer != "" {
			p.prog.report(Progress{Layer: layer, Total: desc.Size, Done: desc.Size, Complete: true})
		}
		return path, nil
	}
	if p.s.hasBlob(d.Hex) {
		return stored()
	}
	if !p.online {
		return "", errNotCached
	}
	unlock, err := p.s.locks.lock(ctx, "blob/"+d.Hex)
	if err != nil {
		return "", err
	}
	defer unlock()
	if p.s.hasBlob(d.Hex) {
		return stored()
	}
	l, err := p.rp.Layer(ctx, p.ref.Context().Digest(d.String()))
	if err != nil {
		return "", err
	}
	rc, err := l.Compressed()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var pr *progressReader
	if layer != "" && p.prog != nil {
		pr = &progressReader{sink: p.prog, p: Progress{Layer: layer, Total: desc.Size}}
	}
	if err := p.s.writeBlobLocked(ctx, d, rc, desc.Size, pr); err != nil {
		return "", err
	}
	return stored()
}

func (s *Store) blobPath(hex string) string { return filepath.Join(s.blobsDir, hex) }

func (s *Store) hasBlob(hex string) bool {
	st, err := os.Lstat(s.blobPath(hex))
	return err == nil && st.Mode().IsRegular()
}

// writeBlob stores the content of r as blob d, taking the blob's lock.
func (s *Store) writeBlob(ctx context.Context, d v1.Hash, r io.Reader, size int64, pr *progressReader) error {
	unlock, err := s.locks.lock(ctx, "blob/"+d.Hex)
	if err != nil {
		return err
	}
	defer unlock()
	if s.hasBlob(d.Hex) {
		return nil
	}
	return s.writeBlobLocked(ctx, d, r, size, pr)
}

// writeBlobLocked stores the content of r as blob d: written to a temporary file,
// checked against the digest and the size, synced, then renamed into place, so a blob
// in the store is always complete and verified.
func (s *Store) writeBlobLocked(ctx context.Context, d v1.Hash, r io.Reader, size int64, pr *progressReader) error {
	f, err := os.CreateTemp(s.tmpDir, "blob-")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	var src io.Reader = io.LimitReader(r, size+1)
	if pr != nil {
		pr.r = src
		src = pr
	}
	n, err := io.CopyBuffer(io.MultiWriter(f, h), ctxReader{ctx, src}, make([]byte, 256<<10))
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case n > size:
		return &InvalidImageError{Layer: d.String(), Reason: fmt.Sprintf("blob is larger than its descriptor's %d bytes", size)}
	case n == size && got != d.String():
		// go-containerregistry's own check may have reported it first, as a read error.
		return &InvalidImageError{Layer: d.String(), Reason: fmt.Sprintf("content does not match its digest (got %s): the image is corrupt or the download was tampered with", got)}
	case err != nil:
		return fmt.Errorf("downloading %s: %w", shortDigest(d.String()), err)
	case n < size:
		return fmt.Errorf("downloading %s: got %d of %d bytes", shortDigest(d.String()), n, size)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), s.blobPath(d.Hex)); err != nil {
		return err
	}
	done = true
	return nil
}

// readVerified reads a small blob and checks it against its digest.
func readVerified(path string, d v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(b, d); err != nil {
		return nil, err
	}
	return b, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// blobLayer is a compressed layer blob in the store; partial.CompressedToLayer adds
// decompression (gzip, zstd or none, by the content's magic bytes).
type blobLayer struct {
	path string
	desc v1.Descriptor
}

func (b *blobLayer) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(b.path) }
func (b *blobLayer) Size() (int64, error)                { return b.desc.Size, nil }
func (b *blobLayer) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }

// progressSink serializes progress reports, so the callback need not be safe for
// concurrent use.
type progressSink struct {
	mu sync.Mutex
	fn func(Progress)
}

func newProgressSink(fn func(Progress)) *progressSink {
	if fn == nil {
		return nil
	}
	return &progressSink{fn: fn}
}

func (p *progressSink) report(pr Progress) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(pr)
}

// progressInterval is the least time between two reports of one download.
const progressInterval = 100 * time.Millisecond

type progressReader struct {
	r    io.Reader
	sink *progressSink
	p    Progress
	last time.Time
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Done += int64(n)
	if now := time.Now(); now.Sub(pr.last) >= progressInterval {
		pr.last = now
		pr.sink.report(pr.p)
	}
	return n, err
}
