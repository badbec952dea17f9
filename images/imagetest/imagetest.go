// Package imagetest builds images for tests and demos: a small busybox image, layers
// from hand-written tar entries, and the hostile layers the unpacker must refuse.
package imagetest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

// RefNameAnnotation tags a manifest in an OCI layout's index.json.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Epoch is the modification time of every entry the builders write, so images are
// reproducible.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultPath is the PATH of the busybox image.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Entry is one tar entry of a layer: a header and, for a regular file, its content.
type Entry struct {
	Header tar.Header
	Body   []byte
}

// Dir is a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: Epoch}}
}

// File is a regular file entry.
func File(name string, mode int64, body string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: Epoch, Size: int64(len(body))}, Body: []byte(body)}
}

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: Epoch}}
}

// Hardlink is a hard link entry; target is a path in the layer.
func Hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: Epoch}}
}

// CharDevice is a character device entry.
func CharDevice(name string, major, minor int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: Epoch}}
}

// Fifo is a named pipe entry.
func Fifo(name string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644, ModTime: Epoch}}
}

// Whiteout is the AUFS-style entry that deletes path from the layers below.
func Whiteout(path string) Entry {
	dir, base := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		dir, base = path[:i+1], path[i+1:]
	}
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + base, Mode: 0o644, ModTime: Epoch}}
}

// Opaque is the AUFS-style entry that hides everything the layers below have in dir.
func Opaque(dir string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimSuffix(dir, "/") + "/.wh..wh..opq", Mode: 0o644, ModTime: Epoch}}
}

// Owned returns e owned by uid:gid.
func (e Entry) Owned(uid, gid int) Entry {
	e.Header.Uid, e.Header.Gid = uid, gid
	return e
}

// Tar writes entries as an uncompressed tar stream.
func Tar(entries ...Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.Body))
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				return nil, fmt.Errorf("entry %q: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Layer makes a gzip-compressed OCI layer of entries.
func Layer(entries ...Entry) (v1.Layer, error) {
	b, err := Tar(entries...)
	if err != nil {
		return nil, err
	}
	return LayerFromTar(b)
}

// LayerFromTar makes a gzip-compressed OCI layer of an uncompressed tar stream.
func LayerFromTar(b []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Image makes a linux image of this host's architecture from layers, lowest first,
// with config applied on top of the defaults.
func Image(config v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = config
	return mutate.ConfigFile(img, cf)
}

// ImageOf is Image with one layer made of entries and an empty config.
func ImageOf(entries ...Entry) (v1.Image, error) {
	l, err := Layer(entries...)
	if err != nil {
		return nil, err
	}
	return Image(v1.Config{}, l)
}

// BusyboxImage is a single-layer image with Debian's static busybox as /bin/busybox,
// a symlink in /bin for each applet, /etc/passwd, /etc/group, /tmp (1777) and /root.
// Its config runs "sh" in "/" with the usual PATH.
func BusyboxImage() (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s not found: install busybox-static (apt-get install busybox-static)", BusyboxPath)
	}
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w (is it busybox-static?)", BusyboxPath, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	entries := []Entry{
		Dir("bin/", 0o755),
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, ModTime: Epoch, Size: int64(len(bin))}, Body: bin},
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	entries = append(entries,
		Dir("dev/", 0o755),
		Dir("etc/", 0o755),
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		File("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"),
		File("etc/hostname", 0o644, "sandbox\n"),
		Dir("proc/", 0o555),
		Dir("root/", 0o700),
		Dir("sys/", 0o555),
		Dir("tmp/", 0o1777),
		Dir("usr/", 0o755),
		Dir("usr/bin/", 0o755),
		Dir("var/", 0o755),
	)
	l, err := Layer(entries...)
	if err != nil {
		return nil, err
	}
	return Image(v1.Config{
		Env:        []string{DefaultPath},
		Cmd:        []string{"sh"},
		WorkingDir: "/",
	}, l)
}

// WriteOCILayout writes img into the OCI image layout at dir (created if needed), tagged
// tag (the org.opencontainers.image.ref.name annotation). A manifest with the same tag is
// replaced; other manifests are kept.
func WriteOCILayout(dir string, img v1.Image, tag string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	var opts []layout.Option
	if tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{RefNameAnnotation: tag}))
		return p.ReplaceImage(img, match.Annotation(RefNameAnnotation, tag), opts...)
	}
	return p.AppendImage(img)
}

// WriteOCIIndex writes an image index into the OCI layout at dir, tagged tag.
func WriteOCIIndex(dir string, idx v1.ImageIndex, tag string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	return p.ReplaceIndex(idx, match.Annotation(RefNameAnnotation, tag),
		layout.WithAnnotations(map[string]string{RefNameAnnotation: tag}))
}

// HostileCase is a layer that a safe unpacker must refuse without touching anything
// outside the layer. Entry is the name of the entry that must be named in the refusal.
type HostileCase struct {
	Name    string
	Entries []Entry
	Entry   string
}

// HostileCases returns layers that try to write outside the layer root; hostDir stands
// for the host and must be left untouched (it should exist and hold a file "victim").
func HostileCases(hostDir string) []HostileCase {
	return []HostileCase{
		{Name: "dotdot", Entries: []Entry{File("../../../../../../.."+hostDir+"/pwned", 0o644, "x")}, Entry: "../../../../../../.." + hostDir + "/pwned"},
		{Name: "dotdot-in-middle", Entries: []Entry{Dir("a/", 0o755), File("a/../../pwned", 0o644, "x")}, Entry: "a/../../pwned"},
		{Name: "absolute-dotdot", Entries: []Entry{File("/../pwned", 0o644, "x")}, Entry: "/../pwned"},
		{Name: "absolute-symlink-write-through", Entries: []Entry{Symlink("evil", hostDir), File("evil/pwned", 0o644, "x")}, Entry: "evil/pwned"},
		{Name: "absolute-symlink-overwrite", Entries: []Entry{Symlink("evil", hostDir), File("evil/victim", 0o644, "x")}, Entry: "evil/victim"},
		{Name: "relative-symlink-write-through", Entries: []Entry{Symlink("rel", "../../../../../../../../.."+hostDir), File("rel/pwned", 0o644, "x")}, Entry: "rel/pwned"},
		{Name: "symlink-chain", Entries: []Entry{Dir("d/", 0o755), Symlink("d/up", ".."), Symlink("d/up2", "up/.."), File("d/up2/pwned", 0o644, "x")}, Entry: "d/up2/pwned"},
		{Name: "symlink-dir-then-mkdir", Entries: []Entry{Symlink("evil", hostDir), Dir("evil/sub/", 0o755)}, Entry: "evil/sub/"},
		{Name: "hardlink-outside", Entries: []Entry{Hardlink("stolen", "../../../../../../.."+hostDir+"/victim")}, Entry: "stolen"},
		{Name: "hardlink-absolute", Entries: []Entry{Hardlink("stolen", hostDir+"/victim")}, Entry: "stolen"},
		{Name: "hardlink-through-symlink", Entries: []Entry{Symlink("evil", hostDir), Hardlink("stolen", "evil/victim")}, Entry: "stolen"},
		{Name: "whiteout-escape", Entries: []Entry{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "../.wh.victim", Mode: 0o644, ModTime: Epoch}}}, Entry: "../.wh.victim"},
		{Name: "whiteout-dotdot", Entries: []Entry{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "a/.wh..", Mode: 0o644, ModTime: Epoch}}}, Entry: "a/.wh.."},
		{Name: "whiteout-through-symlink", Entries: []Entry{Symlink("evil", hostDir), Whiteout("evil/victim")}, Entry: "evil/.wh.victim"},
		{Name: "opaque-through-symlink", Entries: []Entry{Symlink("evil", hostDir), Opaque("evil")}, Entry: "evil/.wh..wh..opq"},
	}
}
