package images

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The reference forms follow the containers-transports convention.
const (
	transportOCI           = "oci"
	transportOCIArchive    = "oci-archive"
	transportDockerArchive = "docker-archive"
	transportRegistry      = "docker"

	refNameAnnotation = "org.opencontainers.image.ref.name"
)

// source is a parsed image reference.
type source struct {
	transport string
	path      string // file or directory (local transports)
	tag       string // tag (oci), NAME:TAG (docker-archive), or the registry reference
}

// resolved is an image found for a reference, with the manifest digest it resolved to.
type resolved struct {
	img     v1.Image
	digest  string
	cleanup func()
}

// resolvers maps a local transport to the function that finds its image. Registry
// references are pulled by Store.pullRegistry instead.
var resolvers = map[string]func(ctx context.Context, s *Store, src source) (*resolved, error){
	transportOCI:           resolveOCI,
	transportOCIArchive:    resolveOCIArchive,
	transportDockerArchive: resolveDockerArchive,
}

func resolveLocal(ctx context.Context, s *Store, src source) (*resolved, error) {
	r, err := resolvers[src.transport](ctx, s, src)
	if err != nil {
		return nil, err
	}
	if r.cleanup == nil {
		r.cleanup = func() {}
	}
	return r, nil
}

// parseRef splits "transport:rest" into its parts. Anything without a local transport
// prefix is a registry reference.
func parseRef(ref string) (source, error) {
	transport, rest, ok := strings.Cut(ref, ":")
	switch {
	case ok && (transport == transportOCI || transport == transportOCIArchive):
		p, tag := splitLast(rest)
		if p == "" {
			return source{}, fmt.Errorf("image %q: missing path: use %s:PATH[:TAG]", ref, transport)
		}
		return source{transport: transport, path: p, tag: tag}, nil
	case ok && transport == transportDockerArchive:
		p, tag := splitDockerArchive(rest)
		if p == "" {
			return source{}, fmt.Errorf("image %q: missing path: use docker-archive:FILE[:NAME:TAG]", ref)
		}
		return source{transport: transport, path: p, tag: tag}, nil
	}
	r := strings.TrimPrefix(ref, "docker://")
	if _, err := name.ParseReference(r); err != nil {
		return source{}, fmt.Errorf("image %q is not a valid reference (%v): use NAME[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]", ref, err)
	}
	return source{transport: transportRegistry, tag: r}, nil
}

// splitLast splits "PATH[:TAG]". A path that exists as written wins, so paths with a
// colon work; a "tag" containing "/" is part of the path.
func splitLast(rest string) (string, string) {
	if _, err := os.Lstat(rest); err == nil {
		return rest, ""
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || strings.Contains(rest[i+1:], "/") {
		return rest, ""
	}
	return rest[:i], rest[i+1:]
}

// splitDockerArchive splits "FILE[:NAME:TAG]": the reference itself contains a colon,
// so the file is the shortest prefix that exists.
func splitDockerArchive(rest string) (string, string) {
	if _, err := os.Lstat(rest); err == nil {
		return rest, ""
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] != ':' {
			continue
		}
		if st, err := os.Stat(rest[:i]); err == nil && !st.IsDir() {
			return rest[:i], rest[i+1:]
		}
	}
	return rest, ""
}

func hostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

func resolveOCI(_ context.Context, s *Store, src source) (*resolved, error) {
	return ociLayout(src.path, src.tag, "oci:"+src.path, s.opts.platform)
}

func ociLayout(dir, tag, what string, plat v1.Platform) (*resolved, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image %s: not an OCI image layout: %w", what, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: reading index.json: %w", what, err)
	}
	cands := im.Manifests
	if tag != "" {
		cands = nil
		for _, d := range im.Manifests {
			if d.Annotations[refNameAnnotation] == tag {
				cands = append(cands, d)
			}
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("image %s: no manifest tagged %q (tags: %s)", what, tag, tagList(im.Manifests))
		}
	}
	var desc v1.Descriptor
	switch {
	case len(cands) == 1:
		desc = cands[0]
	case len(cands) == 0:
		return nil, fmt.Errorf("image %s: the layout holds no manifests", what)
	default:
		d, err := pickPlatform(plat, cands)
		if err != nil {
			if tag == "" {
				return nil, fmt.Errorf("image %s: the layout holds %d manifests; name one with :TAG (tags: %s)", what, len(cands), tagList(im.Manifests))
			}
			return nil, fmt.Errorf("image %s: %w", what, err)
		}
		desc = d
	}
	img, digest, err := descriptorImage(idx, desc, plat, 0)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	return &resolved{img: img, digest: digest}, nil
}

func tagList(ds []v1.Descriptor) string {
	var tags []string
	for _, d := range ds {
		if t := d.Annotations[refNameAnnotation]; t != "" {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		return "none"
	}
	sort.Strings(tags)
	return strings.Join(tags, ", ")
}

// pickPlatform chooses the descriptor for want (normally this host, linux/GOARCH) from
// an index. A variant is compared only when both sides name one.
func pickPlatform(want v1.Platform, ds []v1.Descriptor) (v1.Descriptor, error) {
	var have []string
	for _, d := range ds {
		if d.Platform == nil {
			continue
		}
		if d.Platform.OS == want.OS && d.Platform.Architecture == want.Architecture &&
			(want.Variant == "" || d.Platform.Variant == "" || want.Variant == d.Platform.Variant) {
			return d, nil
		}
		have = append(have, d.Platform.String())
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return v1.Descriptor{}, fmt.Errorf("no manifest for %s (platforms: %s)", want, strings.Join(have, ", "))
}

// descriptorImage follows desc (an image manifest, or an index resolved to the host
// platform) to an image, checking every manifest against its digest.
func descriptorImage(idx v1.ImageIndex, desc v1.Descriptor, plat v1.Platform, depth int) (v1.Image, string, error) {
	if depth > 4 {
		return nil, "", errors.New("image indexes nested too deeply")
	}
	switch desc.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, "", err
		}
		raw, err := child.RawManifest()
		if err != nil {
			return nil, "", err
		}
		if err := checkDigest(raw, desc.Digest); err != nil {
			return nil, "", err
		}
		im, err := child.IndexManifest()
		if err != nil {
			return nil, "", err
		}
		d, err := pickPlatform(plat, im.Manifests)
		if err != nil {
			return nil, "", err
		}
		return descriptorImage(child, d, plat, depth+1)
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, "", err
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, "", err
		}
		if err := checkDigest(raw, desc.Digest); err != nil {
			return nil, "", err
		}
		if err := checkConfig(img); err != nil {
			return nil, "", err
		}
		return img, desc.Digest.String(), nil
	}
	return nil, "", fmt.Errorf("manifest %s has unsupported media type %q", desc.Digest, desc.MediaType)
}

func checkDigest(raw []byte, want v1.Hash) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("unsupported digest algorithm %q", want.Algorithm)
	}
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); got != want.Hex {
		return &InvalidImageError{Layer: want.String(), Reason: "manifest does not match its digest (sha256:" + got + "): the image is corrupt"}
	}
	return nil
}

func checkConfig(img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); m.Config.Digest.Algorithm != "sha256" || got != m.Config.Digest.Hex {
		return &InvalidImageError{Layer: m.Config.Digest.String(), Reason: "config does not match its digest (sha256:" + got + "): the image is corrupt"}
	}
	return nil
}

func resolveDockerArchive(_ context.Context, _ *Store, src source) (*resolved, error) {
	what := "docker-archive:" + src.path
	var tag *name.Tag
	if src.tag != "" {
		t, err := name.NewTag(src.tag)
		if err != nil {
			return nil, fmt.Errorf("image %s: %q is not NAME:TAG: %w", what, src.tag, err)
		}
		tag = &t
	}
	if _, err := os.Stat(src.path); err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	img, err := tarball.ImageFromPath(src.path, tag)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	if err := checkConfig(img); err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	return &resolved{img: img, digest: d.String()}, nil
}

// resolveOCIArchive extracts the archive (an OCI layout in a tar file) to a scratch
// directory and reads it as a layout. The scratch directory lives until Get returns.
func resolveOCIArchive(ctx context.Context, s *Store, src source) (*resolved, error) {
	what := "oci-archive:" + src.path
	f, err := os.Open(src.path)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp(s.tmpDir, "oci-archive-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	if err := extractLayout(ctx, f, tmp, s.opts.maxSize); err != nil {
		cleanup()
		return nil, fmt.Errorf("image %s: %w", what, err)
	}
	r, err := ociLayout(tmp, src.tag, what, s.opts.platform)
	if err != nil {
		cleanup()
		return nil, err
	}
	r.cleanup = cleanup
	return r, nil
}

// extractLayout writes the directories and regular files of an archive beneath dir;
// other entries are not part of a layout and are skipped. The archive is untrusted too.
func extractLayout(ctx context.Context, r io.Reader, dir string, limit int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	buf := make([]byte, copyBufferSize)
	tr := tar.NewReader(bufio.NewReaderSize(r, copyBufferSize))
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		rel, ok := cleanName(hdr.Name)
		if !ok {
			return fmt.Errorf("archive entry %q escapes the root", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o700); err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
		case tar.TypeReg, 0:
			if total += hdr.Size; total > limit {
				return fmt.Errorf("archive is larger than the limit of %d bytes", limit)
			}
			if d := path.Dir(rel); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
				}
			}
			out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("archive entry %q appears twice", hdr.Name)
			}
			if err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
			_, err = io.CopyBuffer(struct{ io.Writer }{out}, tr, buf)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
		}
	}
}
