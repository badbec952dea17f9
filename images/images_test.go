package images_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"msb.dev/msb/images"
	"msb.dev/msb/images/imagetest"
)

// The ids msbd maps sandboxes to by default (container.DefaultHostID): files
// are owned by 2000000000+id, which fits in a uint32.
const (
	hostUID = 2000000000
	hostGID = 2000000000
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root (chown, mknod, trusted xattrs)")
	}
}

func newStore(t testing.TB, opts ...images.Option) *images.Store {
	t.Helper()
	requireRoot(t)
	opts = append([]images.Option{images.WithIDMap(hostUID, hostGID, 65536)}, opts...)
	s, err := images.New(filepath.Join(t.TempDir(), "images"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func busybox(t testing.TB) v1.Image {
	t.Helper()
	if _, err := os.Stat(imagetest.BusyboxPath); err != nil {
		t.Skipf("%s missing: install busybox-static", imagetest.BusyboxPath)
	}
	img, err := imagetest.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeLayout(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := imagetest.WriteOCILayout(dir, img, tag); err != nil {
		t.Fatal(err)
	}
	return dir
}

func lstatSys(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t)
}

func checkBusybox(t *testing.T, img *images.Image, want v1.Image) {
	t.Helper()
	d, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	checkBusyboxDigest(t, img, want, d.String())
}

func checkBusyboxDigest(t *testing.T, img *images.Image, want v1.Image, digest string) {
	t.Helper()
	if img.Digest != digest {
		t.Errorf("Digest = %s, want %s", img.Digest, digest)
	}
	if len(img.Layers) != 1 {
		t.Fatalf("Layers = %v, want 1", img.Layers)
	}
	cf, _ := want.ConfigFile()
	if filepath.Base(img.Layers[0]) != cf.RootFS.DiffIDs[0].Hex || !filepath.IsAbs(img.Layers[0]) {
		t.Errorf("layer dir %s is not the diffID %s", img.Layers[0], cf.RootFS.DiffIDs[0])
	}
	c := img.Config
	if strings.Join(c.Cmd, " ") != "sh" || c.WorkingDir != "/" || len(c.Env) != 1 || c.Env[0] != imagetest.DefaultPath {
		t.Errorf("Config = %+v", c)
	}
	root := img.Layers[0]
	bb, err := os.Stat(imagetest.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if img.Size < bb.Size() {
		t.Errorf("Size = %d, want at least busybox's %d", img.Size, bb.Size())
	}
	st := lstatSys(t, filepath.Join(root, "bin/busybox"))
	if st.Uid != hostUID || st.Gid != hostGID || st.Mode&0o7777 != 0o755 || st.Size != bb.Size() {
		t.Errorf("bin/busybox: uid %d gid %d mode %o size %d", st.Uid, st.Gid, st.Mode&0o7777, st.Size)
	}
	if st.Mtim.Sec != imagetest.Epoch.Unix() {
		t.Errorf("bin/busybox mtime %d, want %d", st.Mtim.Sec, imagetest.Epoch.Unix())
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v; want busybox", target, err)
	}
	if st := lstatSys(t, filepath.Join(root, "bin/sh")); st.Uid != hostUID {
		t.Errorf("bin/sh owned by %d", st.Uid)
	}
	if st := lstatSys(t, filepath.Join(root, "tmp")); st.Mode&0o7777 != 0o1777 || st.Mtim.Sec != imagetest.Epoch.Unix() {
		t.Errorf("tmp: mode %o mtime %d", st.Mode&0o7777, st.Mtim.Sec)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/passwd")); err != nil || !strings.HasPrefix(string(b), "root:x:0:0:") {
		t.Errorf("etc/passwd: %q, %v", b, err)
	}
	if st := lstatSys(t, root); st.Uid != hostUID || st.Mode&0o777 != 0o755 {
		t.Errorf("layer root: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	// The unpacked busybox runs.
	out, err := exec.Command(filepath.Join(root, "bin/busybox"), "echo", "hi").Output()
	if err != nil || string(out) != "hi\n" {
		t.Errorf("busybox echo: %q, %v", out, err)
	}
}

func TestOCILayoutRoundTrip(t *testing.T) {
	s := newStore(t)
	want := busybox(t)
	dir := writeLayout(t, want, "latest")
	ctx := context.Background()

	img, err := s.Get(ctx, "oci:"+dir+":latest")
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, img, want)
	if img.Ref != "oci:"+dir+":latest" {
		t.Errorf("Ref = %q", img.Ref)
	}
	if n := s.Unpacks(); n != 1 {
		t.Errorf("unpacked %d layers, want 1", n)
	}
	before := lstatSys(t, img.Layers[0])

	// Again, and without the tag (the layout holds one manifest): nothing is unpacked.
	for _, ref := range []string{"oci:" + dir + ":latest", "oci:" + dir} {
		again, err := s.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if again.Digest != img.Digest || again.Layers[0] != img.Layers[0] || again.Size != img.Size {
			t.Errorf("%s: got %+v, want %+v", ref, again, img)
		}
	}
	if n := s.Unpacks(); n != 1 {
		t.Errorf("unpacked %d layers after the second Get, want 1", n)
	}
	after := lstatSys(t, img.Layers[0])
	if before.Ino != after.Ino || before.Ctim != after.Ctim {
		t.Error("layer directory changed on the second Get")
	}

	// A new store on the same directory finds the layer too.
	s2, err := images.New(filepath.Dir(filepath.Dir(img.Layers[0])), images.WithIDMap(hostUID, hostGID, 65536))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s2.Get(ctx, "oci:"+dir+":latest"); err != nil || again.Size != img.Size || s2.Unpacks() != 0 {
		t.Errorf("reopened store: %+v, %v, %d unpacks", again, err, s2.Unpacks())
	}
	// ... but not with another id map.
	if _, err := images.New(filepath.Dir(filepath.Dir(img.Layers[0])), images.WithIDMap(200000, 200000, 65536)); err == nil {
		t.Error("New with another id map succeeded")
	}
}

func TestOCIArchive(t *testing.T) {
	s := newStore(t)
	want := busybox(t)
	dir := writeLayout(t, want, "v1")
	archive := filepath.Join(t.TempDir(), "image.tar")
	if out, err := exec.Command("tar", "-C", dir, "-cf", archive, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	for _, ref := range []string{"oci-archive:" + archive + ":v1", "oci-archive:" + archive} {
		img, err := s.Get(context.Background(), ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		checkBusybox(t, img, want)
	}
	if _, err := s.Get(context.Background(), "oci-archive:"+archive+":nope"); err == nil || !strings.Contains(err.Error(), `no manifest tagged "nope"`) {
		t.Errorf("missing tag: %v", err)
	}
	// The scratch copy of the layout is gone.
	if ents, err := os.ReadDir(filepath.Join(s.Dir(), "tmp")); err != nil || len(ents) != 0 {
		t.Errorf("tmp holds %v, %v", ents, err)
	}
}

func TestDockerArchive(t *testing.T) {
	s := newStore(t)
	want := busybox(t)
	archive := filepath.Join(t.TempDir(), "image.tar")
	tag, err := name.NewTag("msb.test/busybox:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, want); err != nil {
		t.Fatal(err)
	}
	// docker save has no manifest of its own; the digest is that of the manifest
	// go-containerregistry derives from it (Docker media types).
	fromArchive, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fromArchive.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"docker-archive:" + archive, "docker-archive:" + archive + ":msb.test/busybox:1.0"} {
		img, err := s.Get(context.Background(), ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		checkBusyboxDigest(t, img, want, d.String())
	}
	if n := s.Unpacks(); n != 1 {
		t.Errorf("unpacked %d layers, want 1", n)
	}
	if _, err := s.Get(context.Background(), "docker-archive:"+archive+":msb.test/other:1.0"); err == nil {
		t.Error("wrong tag accepted")
	}
}

func TestIndexResolvesHostPlatform(t *testing.T) {
	s := newStore(t)
	amd, err := imagetest.ImageOf(imagetest.File("arch", 0o644, "host"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := imagetest.ImageOf(imagetest.File("arch", 0o644, "other"))
	if err != nil {
		t.Fatal(err)
	}
	host := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	foreign := v1.Platform{OS: "linux", Architecture: "s390x"}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &foreign}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &host}},
	)
	dir := filepath.Join(t.TempDir(), "layout")
	if err := imagetest.WriteOCIIndex(dir, idx, "multi"); err != nil {
		t.Fatal(err)
	}
	img, err := s.Get(context.Background(), "oci:"+dir+":multi")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := amd.Digest()
	if img.Digest != d.String() {
		t.Errorf("Digest = %s, want the host image %s", img.Digest, d)
	}
	if b, _ := os.ReadFile(filepath.Join(img.Layers[0], "arch")); string(b) != "host" {
		t.Errorf("arch = %q", b)
	}

	// With two tags in the layout, a reference without a tag is ambiguous.
	if err := imagetest.WriteOCILayout(dir, amd, "single"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "oci:"+dir); err == nil || !strings.Contains(err.Error(), "multi, single") {
		t.Errorf("ambiguous layout: %v", err)
	}
}

func TestBadReferences(t *testing.T) {
	s := newStore(t)
	for _, ref := range []string{"UPPER/case", "a:b:c:d", "oci:", "docker-archive:"} {
		if _, err := s.Get(context.Background(), ref); err == nil {
			t.Errorf("%s: accepted", ref)
		} else {
			t.Log(err)
		}
	}
	if _, err := s.Get(context.Background(), "oci:"+t.TempDir()+"/missing:latest"); err == nil {
		t.Errorf("missing layout accepted")
	}
	if _, err := s.Pull(context.Background(), "oci:"+t.TempDir(), "Sometimes", nil); err == nil || !strings.Contains(err.Error(), "unknown pull policy") {
		t.Errorf("bad policy: %v", err)
	}
}

// TestHostile unpacks layers that try to write outside their root: each must be refused
// with an InvalidImageError naming the layer and the entry, and the "host" untouched.
func TestHostile(t *testing.T) {
	s := newStore(t)
	host := t.TempDir()
	victim := filepath.Join(host, "victim")
	if err := os.WriteFile(victim, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := imagetest.HostileCases(host)
	cases = append(cases,
		imagetest.HostileCase{Name: "uid-out-of-range", Entries: []imagetest.Entry{imagetest.File("f", 0o644, "x").Owned(70000, 0)}, Entry: "f"},
		imagetest.HostileCase{Name: "gid-out-of-range", Entries: []imagetest.Entry{imagetest.File("f", 0o644, "x").Owned(0, 65536)}, Entry: "f"},
		imagetest.HostileCase{Name: "hardlink-missing", Entries: []imagetest.Entry{imagetest.Hardlink("a", "nothing")}, Entry: "a"},
		imagetest.HostileCase{Name: "root-as-file", Entries: []imagetest.Entry{imagetest.File(".", 0o644, "")}, Entry: "."},
		imagetest.HostileCase{Name: "file-under-file", Entries: []imagetest.Entry{imagetest.File("f", 0o644, "x"), imagetest.File("f/g", 0o644, "x")}, Entry: "f/g"},
	)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			img, err := imagetest.ImageOf(c.Entries...)
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			diffID := cf.RootFS.DiffIDs[0]
			dir := writeLayout(t, img, "bad")
			_, err = s.Get(context.Background(), "oci:"+dir+":bad")
			var inv *images.InvalidImageError
			if !errors.As(err, &inv) {
				t.Fatalf("Get: %v, want an InvalidImageError", err)
			}
			if inv.Layer != diffID.String() || inv.Entry != c.Entry {
				t.Errorf("error names layer %s entry %q, want %s %q (%v)", inv.Layer, inv.Entry, diffID, c.Entry, err)
			}
			if !strings.Contains(err.Error(), "layer sha256:"+diffID.Hex[:12]+"…: entry ") {
				t.Errorf("message: %v", err)
			}
			t.Log(err)
			checkHostUntouched(t, host)
			checkNoLayer(t, s, diffID)
		})
	}
}

func checkHostUntouched(t *testing.T, host string) {
	t.Helper()
	ents, err := os.ReadDir(host)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "victim" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("host dir holds %v, want only victim", names)
	}
	st := lstatSys(t, filepath.Join(host, "victim"))
	if b, _ := os.ReadFile(filepath.Join(host, "victim")); string(b) != "original" || st.Nlink != 1 || st.Uid != 0 || st.Mode&0o7777 != 0o644 {
		t.Errorf("victim changed: %q nlink %d uid %d mode %o", b, st.Nlink, st.Uid, st.Mode&0o7777)
	}
	if st := lstatSys(t, host); st.Uid != 0 {
		t.Errorf("host dir chowned to %d", st.Uid)
	}
	if _, err := unix.Getxattr(host, "trusted.overlay.opaque", make([]byte, 8)); err == nil {
		t.Error("host dir got an opaque xattr")
	}
}

// checkNoLayer checks that a refused layer left nothing behind in the store.
func checkNoLayer(t *testing.T, s *images.Store, diffID v1.Hash) {
	t.Helper()
	layers := filepath.Join(s.Dir(), "layers")
	ents, err := os.ReadDir(layers)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == diffID.Hex || strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestSafeButTricky(t *testing.T) {
	s := newStore(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "victim"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.ImageOf(
		imagetest.File("/abs/file", 0o644, "abs"), // a leading / is relative to the layer root
		imagetest.Symlink("evil", host),
		imagetest.File("evil", 0o600, "replaced"), // replaces the symlink, does not follow it
		imagetest.Symlink("victim", filepath.Join(host, "victim")),
		imagetest.Symlink("victim", "elsewhere"), // a symlink replacing a symlink
		imagetest.Dir("usr/lib/", 0o755),
		imagetest.Symlink("lib", "usr/lib"),
		imagetest.File("lib/through", 0o644, "in"), // through a symlink that stays inside
		imagetest.File("suid", 0o4755, "#!"),
		imagetest.File("a/b/c/deep", 0o640, "deep").Owned(1000, 1001),
		imagetest.Hardlink("a/hard", "a/b/c/deep"),
		imagetest.Dir("./", 0o755),
		imagetest.Fifo("fifo"),
		imagetest.CharDevice("dev-null", 1, 3),
		imagetest.CharDevice("wh-lookalike", 0, 0),
		imagetest.Dir("ro/", 0o555),
		imagetest.File("ro/f", 0o444, "ro"),
	)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeLayout(t, img, "t")
	got, err := s.Get(context.Background(), "oci:"+dir+":t")
	if err != nil {
		t.Fatal(err)
	}
	root := got.Layers[0]
	checkHostUntouched(t, host)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	if read("abs/file") != "abs" || read("evil") != "replaced" || read("usr/lib/through") != "in" || read("ro/f") != "ro" {
		t.Error("wrong content")
	}
	if l, _ := os.Readlink(filepath.Join(root, "victim")); l != "elsewhere" {
		t.Errorf("victim -> %q", l)
	}
	if st := lstatSys(t, filepath.Join(root, "suid")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("suid mode %o", st.Mode&0o7777)
	}
	deep := lstatSys(t, filepath.Join(root, "a/b/c/deep"))
	if deep.Uid != hostUID+1000 || deep.Gid != hostGID+1001 || deep.Mode&0o777 != 0o640 || deep.Nlink != 2 {
		t.Errorf("deep: %d:%d mode %o nlink %d", deep.Uid, deep.Gid, deep.Mode&0o777, deep.Nlink)
	}
	if hard := lstatSys(t, filepath.Join(root, "a/hard")); hard.Ino != deep.Ino {
		t.Error("a/hard is not a hardlink of a/b/c/deep")
	}
	if st := lstatSys(t, filepath.Join(root, "a/b")); st.Uid != hostUID || st.Mode&0o777 != 0o755 {
		t.Errorf("implicit parent a/b: uid %d mode %o", st.Uid, st.Mode&0o777)
	}
	if st := lstatSys(t, filepath.Join(root, "fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo mode %o", st.Mode)
	}
	for _, p := range []string{"dev-null", "wh-lookalike"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("device %s was created: %v", p, err)
		}
	}
	if got.Size != int64(len("abs")+len("replaced")+len("in")+len("#!")+len("deep")+len("ro")) {
		t.Errorf("Size = %d", got.Size)
	}
}

func TestWhiteouts(t *testing.T) {
	s := newStore(t)
	lower, err := imagetest.Layer(
		imagetest.File("keep", 0o644, "keep"),
		imagetest.File("gone", 0o644, "gone"),
		imagetest.Dir("dir/", 0o755),
		imagetest.File("dir/old", 0o644, "old"),
		imagetest.Dir("gonedir/", 0o755),
		imagetest.File("gonedir/x", 0o644, "x"),
	)
	if err != nil {
		t.Fatal(err)
	}
	upper, err := imagetest.Layer(
		imagetest.Whiteout("gone"),
		imagetest.Whiteout("gonedir"),
		imagetest.Dir("dir/", 0o755),
		imagetest.Opaque("dir"),
		imagetest.File("dir/new", 0o644, "new"),
		imagetest.Whiteout("newdir/nothing"), // parent missing: created
		imagetest.Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: ".wh..wh.plnk", ModTime: imagetest.Epoch}},
	)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.Image(v1.Config{}, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), "oci:"+writeLayout(t, img, "wh"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != 2 {
		t.Fatalf("layers %v", got.Layers)
	}
	up := got.Layers[1]
	for _, p := range []string{"gone", "gonedir", "newdir/nothing"} {
		st := lstatSys(t, filepath.Join(up, p))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 char device", p, st.Mode, st.Rdev)
		}
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(up, "dir"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("dir opaque xattr: %q, %v", buf[:n], err)
	}
	if ents, _ := os.ReadDir(up); len(ents) != 4 {
		t.Errorf("upper layer holds %d entries, want 4 (no .wh. files)", len(ents))
	}

	// Mount the two layers as overlay lowers and look.
	mnt := t.TempDir()
	opts := "lowerdir=" + got.Layers[1] + ":" + got.Layers[0]
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Skipf("overlay mount not possible here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	for p, want := range map[string]bool{"keep": true, "gone": false, "gonedir": false, "dir/new": true, "dir/old": false, "newdir/nothing": false} {
		_, err := os.Lstat(filepath.Join(mnt, p))
		if (err == nil) != want {
			t.Errorf("overlay: %s exists = %v, want %v", p, err == nil, want)
		}
	}
}

func TestCorruptBlob(t *testing.T) {
	s := newStore(t)
	img, err := imagetest.ImageOf(imagetest.File("f", 0o644, strings.Repeat("content ", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()

	t.Run("flipped-byte", func(t *testing.T) {
		dir := writeLayout(t, img, "x")
		blob := filepath.Join(dir, "blobs", "sha256", ld.Hex)
		b, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(blob, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(context.Background(), "oci:"+dir); err == nil {
			t.Fatal("corrupt layer accepted")
		} else {
			t.Log(err)
		}
	})
	t.Run("other-content", func(t *testing.T) {
		// A valid layer with other content under the digest: the diffID check catches it.
		dir := writeLayout(t, img, "x")
		other, err := imagetest.Layer(imagetest.File("f", 0o644, "evil"))
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := other.Compressed()
		b, _ := io.ReadAll(rc)
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", ld.Hex), b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = s.Get(context.Background(), "oci:"+dir)
		var inv *images.InvalidImageError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), "does not match its diffID") {
			t.Fatalf("Get: %v", err)
		}
	})
	t.Run("manifest", func(t *testing.T) {
		dir := writeLayout(t, img, "x")
		md, _ := img.Digest()
		p := filepath.Join(dir, "blobs", "sha256", md.Hex)
		b, _ := os.ReadFile(p)
		if err := os.WriteFile(p, append(b, ' '), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(context.Background(), "oci:"+dir); err == nil || !strings.Contains(err.Error(), "manifest does not match") {
			t.Fatalf("Get: %v", err)
		}
	})
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "layers")); len(ents) != 0 {
		t.Errorf("layers left: %v", ents)
	}
}

func TestSizeLimit(t *testing.T) {
	s := newStore(t, images.WithMaxUnpackedSize(1000))
	small, _ := imagetest.Layer(imagetest.File("a", 0o644, strings.Repeat("a", 600)))
	small2, _ := imagetest.Layer(imagetest.File("b", 0o644, strings.Repeat("b", 600)))
	big, _ := imagetest.Layer(imagetest.File("x", 0o644, "x"), imagetest.File("big", 0o644, strings.Repeat("b", 2000)))
	for name, layers := range map[string][]v1.Layer{"one-layer": {big}, "sum-of-layers": {small, small2}} {
		t.Run(name, func(t *testing.T) {
			img, err := imagetest.Image(v1.Config{}, layers...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Get(context.Background(), "oci:"+writeLayout(t, img, ""))
			var inv *images.InvalidImageError
			if !errors.As(err, &inv) || !strings.Contains(inv.Reason, "limit of 1000 bytes") {
				t.Fatalf("Get: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestConcurrentGetsUnpackOnce(t *testing.T) {
	s := newStore(t)
	want := busybox(t)
	extra, _ := imagetest.Layer(imagetest.File("extra", 0o644, "x"))
	img2, err := mutate.AppendLayers(want, extra)
	if err != nil {
		t.Fatal(err)
	}
	d1 := writeLayout(t, want, "a")
	d2 := writeLayout(t, img2, "b")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := "oci:" + d1 + ":a"
			if i%2 == 1 {
				ref = "oci:" + d2 + ":b"
			}
			if _, err := s.Get(context.Background(), ref); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.Unpacks(); n != 2 {
		t.Errorf("unpacked %d layers, want 2 (busybox once, extra once)", n)
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "images")
	if _, err := images.New(dir); err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(dir, "layers", ".tmp-123")
	if err := os.MkdirAll(filepath.Join(half, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := images.New(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{half, filepath.Join(dir, "tmp", "junk")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived New: %v", p, err)
		}
	}
}

// TestHostUsersLockedOut (finding #2): the store's directories are 0700, so no
// host user but root reaches a layer's files, setuid ones included. An older
// store's 0711 directories are tightened by New.
func TestHostUsersLockedOut(t *testing.T) {
	s := newStore(t)
	for _, d := range []string{"", "layers"} {
		if err := os.Chmod(filepath.Join(s.Dir(), d), 0o711); err != nil {
			t.Fatal(err)
		}
	}
	// Reopened as after an upgrade.
	s, err := images.New(s.Dir(), images.WithIDMap(hostUID, hostGID, 65536))
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.ImageOf(imagetest.File("bin/suid", 0o4755, "#!/bin/sh\nid\n"), imagetest.File("etc/secret", 0o644, "s").Owned(65534, 65534))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), "oci:"+writeLayout(t, img, "t")+":t")
	if err != nil {
		t.Fatal(err)
	}
	layer := got.Layers[0]
	for _, p := range []string{s.Dir(), filepath.Join(s.Dir(), "layers"), filepath.Join(s.Dir(), "meta"), filepath.Join(s.Dir(), "tmp"), filepath.Join(s.Dir(), "blobs")} {
		if st := lstatSys(t, p); st.Uid != 0 || st.Mode&0o7777 != 0o700 {
			t.Errorf("%s: owner %d mode %o, want root 0700", p, st.Uid, st.Mode&0o7777)
		}
	}
	if st := lstatSys(t, filepath.Join(layer, "bin/suid")); st.Uid != hostUID || st.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/suid: %d %o, want %d 4755 (setuid kept for the sandbox)", st.Uid, st.Mode&0o7777, hostUID)
	}
	if st := lstatSys(t, filepath.Join(layer, "etc/secret")); st.Uid != hostUID+65534 || st.Gid != hostGID+65534 {
		t.Errorf("etc/secret: %d:%d, want %d:%d", st.Uid, st.Gid, hostUID+65534, hostGID+65534)
	}
	asNobody := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asNobody(imagetest.BusyboxPath, "true"); err != nil {
		t.Skipf("cannot run %s as nobody: %v %s", imagetest.BusyboxPath, err, out)
	}
	for _, p := range []string{layer, filepath.Join(layer, "bin/suid"), filepath.Join(layer, "etc/secret"), filepath.Join(s.Dir(), "layers")} {
		for _, args := range [][]string{{"stat", p}, {"ls", p}} {
			if out, err := asNobody(imagetest.BusyboxPath, args...); err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("as nobody, %q: %v %q, want permission denied", args, err, out)
			}
		}
	}
	if out, err := asNobody(filepath.Join(layer, "bin/suid")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("as nobody, running the layer's setuid file: %v %q, want permission denied", err, out)
	}
}
