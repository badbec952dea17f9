package tarcopy

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree makes a small tree with modes, an empty file, a nested dir, a
// relative symlink and a read-only directory.
func tree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "src/sub/deep"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "src/run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "src/empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(dir, "src/sub/deep/data"), bytes.Repeat([]byte{0, 1, 2, 255}, 100000), 0o640))
	must(os.Symlink("../run.sh", filepath.Join(dir, "src/sub/link")))
	must(os.MkdirAll(filepath.Join(dir, "src/ro"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "src/ro/f"), []byte("x"), 0o444))
	must(os.Chmod(filepath.Join(dir, "src/ro"), 0o555))
	mt := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for _, p := range []string{"src/run.sh", "src/empty", "src/sub/deep/data", "src/sub/deep", "src/sub", "src/ro/f", "src/ro", "src"} {
		must(os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "src/ro"), 0o755) })
}

type entryInfo struct {
	mode  fs.FileMode
	mtime time.Time
	link  string
	sum   [32]byte
}

// snapshot records every entry below dir (relative names).
func snapshot(t *testing.T, dir string) map[string]entryInfo {
	t.Helper()
	out := map[string]entryInfo{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entryInfo{mode: fi.Mode(), mtime: fi.ModTime()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.link, _ = os.Readlink(p)
			e.mtime = time.Time{}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func roundTrip(t *testing.T, src, dest string) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(Write(pw, src, func(s string) { t.Log(s) })) }()
	if err := Extract(pr, dest, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTripTree(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir)
	want := snapshot(t, filepath.Join(dir, "src"))

	// A new name: the tree becomes it.
	roundTrip(t, filepath.Join(dir, "src"), filepath.Join(dir, "copy"))
	if got := snapshot(t, filepath.Join(dir, "copy")); !equal(t, got, want) {
		t.Fatal("copy to a new name differs")
	}
	// An existing directory: the tree lands inside, under its own name.
	os.Mkdir(filepath.Join(dir, "into"), 0o755)
	roundTrip(t, filepath.Join(dir, "src"), filepath.Join(dir, "into"))
	if got := snapshot(t, filepath.Join(dir, "into/src")); !equal(t, got, want) {
		t.Fatal("copy into a directory differs")
	}
	t.Cleanup(func() {
		os.Chmod(filepath.Join(dir, "copy/ro"), 0o755)
		os.Chmod(filepath.Join(dir, "into/src/ro"), 0o755)
	})
	// A single file to a new name, and over an existing file.
	roundTrip(t, filepath.Join(dir, "src/run.sh"), filepath.Join(dir, "one"))
	os.WriteFile(filepath.Join(dir, "two"), []byte("old contents, longer"), 0o600)
	roundTrip(t, filepath.Join(dir, "src/run.sh"), filepath.Join(dir, "two"))
	for _, n := range []string{"one", "two"} {
		got := snapshot(t, filepath.Join(dir, n))["."]
		if got != want["run.sh"] {
			t.Errorf("%s: %+v, want %+v", n, got, want["run.sh"])
		}
	}
}

func equal(t *testing.T, got, want map[string]entryInfo) bool {
	ok := true
	for k, w := range want {
		if g, found := got[k]; !found || g != w {
			t.Errorf("%s: got %+v (present %v), want %+v", k, g, found, w)
			ok = false
		}
	}
	for k := range got {
		if _, found := want[k]; !found {
			t.Errorf("%s: not in the source", k)
			ok = false
		}
	}
	return ok
}

func TestSetIDClearedUnlessKept(t *testing.T) {
	mk := func() io.Reader {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: "suid", Mode: 0o4755, Typeflag: tar.TypeReg})
		tw.Close()
		return &b
	}
	dir := t.TempDir()
	if err := Extract(mk(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "suid"))
	if fi.Mode()&fs.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v: the setuid bit must be cleared", fi.Mode())
	}
	dir2 := t.TempDir()
	if err := Extract(mk(), dir2, Options{KeepSetID: true}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir2, "suid")); fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("mode %v: KeepSetID must keep it", fi.Mode())
	}
}

type ent struct {
	name, link string
	typ        byte
	body       string
}

func craft(ents ...ent) io.Reader {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return &b
}

// TestHostileStreams: every escape form is refused with an error naming the
// entry, and nothing lands outside the destination.
func TestHostileStreams(t *testing.T) {
	reg, dir, sym, lnk := byte(tar.TypeReg), byte(tar.TypeDir), byte(tar.TypeSymlink), byte(tar.TypeLink)
	cases := []struct {
		name    string
		ents    []ent
		refused string // the entry named in the error
	}{
		{"absolute name", []ent{{name: "/OUTSIDE", typ: reg, body: "x"}}, "/OUTSIDE"},
		{"dotdot name", []ent{{name: "../OUTSIDE", typ: reg, body: "x"}}, "../OUTSIDE"},
		{"dotdot inside name", []ent{{name: "a/../../OUTSIDE", typ: reg, body: "x"}}, "a/../../OUTSIDE"},
		{"absolute symlink", []ent{{name: "l", link: "/", typ: sym}}, "l"},
		{"relative symlink out", []ent{{name: "d/", typ: dir}, {name: "d/l", link: "../../OUTSIDE", typ: sym}}, "d/l"},
		{"write through a symlink", []ent{{name: "l", link: ".", typ: sym}, {name: "l/f", typ: reg, body: "x"}}, "l/f"},
		{"symlink via a symlink dir", []ent{{name: "a", link: ".", typ: sym}, {name: "a/l", link: "..", typ: sym}}, "a/l"},
		{"symlink swapped in mid-copy", []ent{{name: "d/", typ: dir}, {name: "d/f", typ: reg, body: "x"}, {name: "d", link: ".", typ: sym}, {name: "d/OUTSIDE", typ: reg, body: "x"}}, "d"},
		{"hardlink absolute", []ent{{name: "h", link: "/etc/passwd", typ: lnk}}, "h"},
		{"hardlink dotdot", []ent{{name: "h", link: "../OUTSIDE", typ: lnk}}, "h"},
		{"hardlink to a symlink", []ent{{name: "s", link: "x", typ: sym}, {name: "h", link: "s", typ: lnk}}, "h"},
		{"hardlink through a symlink dir", []ent{{name: "s", link: ".", typ: sym}, {name: "h", link: "s/x", typ: lnk}}, "h"},
		{"char device", []ent{{name: "null", typ: tar.TypeChar}}, "null"},
		{"block device", []ent{{name: "sda", typ: tar.TypeBlock}}, "sda"},
		{"fifo", []ent{{name: "p", typ: tar.TypeFifo}}, "p"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			dest := filepath.Join(base, "dest")
			os.Mkdir(dest, 0o755)
			os.WriteFile(filepath.Join(dest, "x"), []byte("inside"), 0o644)
			before := snapshot(t, base)
			// Into: names unchanged, so each form meets its own check
			// rather than the one-entry rule (TestHeldToTheEntry).
			err := Extract(craft(c.ents...), dest, Options{Into: true})
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want a refusal", err)
			}
			if te.Entry != c.refused {
				t.Errorf("refused %q, want %q (%v)", te.Entry, c.refused, err)
			}
			if !strings.Contains(err.Error(), c.refused) {
				t.Errorf("error %q does not name the entry", err)
			}
			after := snapshot(t, base)
			for k := range after {
				if _, ok := before[k]; !ok && !strings.HasPrefix(k, "dest/") {
					t.Errorf("%s written outside the destination", k)
				}
			}
			if _, err := os.Lstat(filepath.Join(base, "OUTSIDE")); err == nil {
				t.Error("OUTSIDE was written")
			}
			// No symlink left in dest points out of it.
			filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
				if d != nil && d.Type()&fs.ModeSymlink != 0 {
					tgt, _ := os.Readlink(p)
					rel, _ := filepath.Rel(dest, filepath.Join(filepath.Dir(p), tgt))
					if filepath.IsAbs(tgt) || !filepath.IsLocal(rel) && rel != "." {
						t.Errorf("%s -> %s left pointing out", p, tgt)
					}
				}
				return nil
			})
		})
	}
}

// TestControlEntriesAccepted: the legitimate forms next to the hostile ones
// pass, so the refusals above are not a blanket "no".
func TestControlEntriesAccepted(t *testing.T) {
	reg, dir, sym, lnk := byte(tar.TypeReg), byte(tar.TypeDir), byte(tar.TypeSymlink), byte(tar.TypeLink)
	dest := t.TempDir()
	err := Extract(craft(
		ent{name: "./", typ: dir},
		ent{name: "./d/", typ: dir},
		ent{name: "d/f", typ: reg, body: "data"},
		ent{name: "d/up", link: "../top", typ: sym},
		ent{name: "d/h", link: "d/f", typ: lnk},
		ent{name: "implicit/parent/f", typ: reg, body: "p"},
		ent{name: "top", typ: reg, body: "t"},
	), dest, Options{Into: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "d/up")); string(b) != "t" {
		t.Errorf("d/up reads %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "d/h")); string(b) != "data" {
		t.Errorf("d/h reads %q", b)
	}
}

// TestExistingSymlinkReplaced: a symlink already at a file's place in the
// destination is replaced, never written through.
func TestExistingSymlinkReplaced(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	os.Mkdir(dest, 0o755)
	os.WriteFile(filepath.Join(base, "victim"), []byte("keep"), 0o644)
	os.Symlink("../victim", filepath.Join(dest, "f"))
	if err := Extract(craft(ent{name: "f", typ: tar.TypeReg, body: "new"}), dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "victim")); string(b) != "keep" {
		t.Errorf("victim now %q: written through a symlink", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dest, "f")); !fi.Mode().IsRegular() {
		t.Errorf("f is %v", fi.Mode())
	}
}

// TestLargeFileConstantMemory copies 200 MiB through a pipe: byte-exact, and
// the bytes allocated stay far below the file's size.
func TestLargeFileConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 200 MiB copy")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	chunk := make([]byte, 1<<20)
	for i := range 200 {
		for j := range chunk {
			chunk[j] = byte(i*7 + j*13)
		}
		f.Write(chunk)
		h.Write(chunk)
	}
	f.Close()
	want := h.Sum(nil)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	roundTrip(t, src, filepath.Join(dir, "copy"))
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("copying 200 MiB allocated %d MiB; it must stream", alloc>>20)
	}
	g, err := os.Open(filepath.Join(dir, "copy"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h2 := sha256.New()
	io.Copy(h2, g)
	if !bytes.Equal(h2.Sum(nil), want) {
		t.Fatal("the copy differs from the source")
	}
}

// TestSpecialFilesLeftOut: a fifo inside a tree is left out with a warning;
// one named as the source is an error.
func TestSpecialFilesLeftOut(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "t"), 0o755)
	if err := syscall.Mkfifo(filepath.Join(dir, "t/p"), 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	var warned []string
	var b bytes.Buffer
	if err := Write(&b, filepath.Join(dir, "t"), func(s string) { warned = append(warned, s) }); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "t/p") || !strings.Contains(warned[0], "fifo") {
		t.Errorf("warnings %q", warned)
	}
	if err := Write(io.Discard, filepath.Join(dir, "t/p"), nil); err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("a fifo as the source: %v", err)
	}
}
