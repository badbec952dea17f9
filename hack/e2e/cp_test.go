package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlRusage runs msbctl and returns its peak resident memory in bytes.
//
// The rusage of a child this process starts is no measure: Go starts it with
// vfork, and exec records the peak of the memory it leaves (this test
// process's, tens of MiB late in a full run) as the child's. GNU time, which
// forks msbctl from its own small process, reports msbctl's alone; without
// it the rusage is used and may count the test process's peak.
func (d *daemon) ctlRusage(args ...string) (stdout, stderr string, code int, maxRSS int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	msbctl := filepath.Join(binDir, "msbctl")
	cmd := exec.CommandContext(ctx, msbctl, args...)
	rssFile := ""
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		rssFile = filepath.Join(d.t.TempDir(), "maxrss")
		cmd = exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, msbctl}, args...)...)
	} else {
		d.t.Log("no /usr/bin/time: msbctl's peak memory is read from its rusage, which may count this test process's")
	}
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		d.t.Fatal(err)
	}
	if rssFile != "" {
		b, err := os.ReadFile(rssFile)
		lines := strings.Fields(string(b))
		kb, perr := int64(0), error(nil)
		if err == nil && len(lines) > 0 {
			kb, perr = strconv.ParseInt(lines[len(lines)-1], 10, 64)
		}
		if err != nil || len(lines) == 0 || perr != nil {
			d.t.Fatalf("reading msbctl's peak memory from /usr/bin/time: %q %v %v", b, err, perr)
		}
		maxRSS = kb << 10
	} else if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxRSS = ru.Maxrss << 10
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode(), maxRSS
}

type fileFacts struct {
	mode  fs.FileMode
	mtime int64
	link  string
	sum   string
}

func treeFacts(t *testing.T, dir string) map[string]fileFacts {
	t.Helper()
	out := map[string]fileFacts{}
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := os.Lstat(p)
		f := fileFacts{mode: fi.Mode(), mtime: fi.ModTime().UnixNano()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			f.link, _ = os.Readlink(p)
			f.mtime = 0
		case fi.Mode().IsRegular():
			f.sum = fileSum(t, p)
		}
		out[rel] = f
		return nil
	})
	return out
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// TestCopyRoundTrip: a tree with modes, mtimes, an empty file and a symlink
// goes into a sandbox and comes back the same; a 200 MiB file both ways is
// byte-exact with msbctl's memory bounded; the tar stream forms work.
func TestCopyRoundTrip(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("cp", "", "sleep", "1000"))
	d.must("wait", "sandbox/cp", "--for=condition=Ready", "--timeout=60s")
	d.must("exec", "cp", "--", "mkdir", "-p", "/work")

	local := t.TempDir()
	src := filepath.Join(local, "tree")
	os.MkdirAll(filepath.Join(src, "sub/deep"), 0o750)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(src, "empty"), nil, 0o600)
	os.WriteFile(filepath.Join(src, "sub/deep/data"), bytes.Repeat([]byte("\x00\xffdata"), 50000), 0o640)
	os.Symlink("../run.sh", filepath.Join(src, "sub/link"))
	mt := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, p := range []string{"run.sh", "empty", "sub/deep/data", "sub/deep", "sub", "."} {
		os.Chtimes(filepath.Join(src, p), mt, mt)
	}
	want := treeFacts(t, src)

	d.must("cp", src, "cp:/work/tree")
	// The sandbox sees it with its modes.
	if got := d.must("exec", "cp", "--", "stat", "-c", "%a %s", "/work/tree/run.sh", "/work/tree/empty", "/work/tree/sub/deep"); got != "755 18\n600 0\n750 4096\n" && !strings.HasPrefix(got, "755 18\n600 0\n750 ") {
		t.Errorf("in the sandbox: %q", got)
	}
	if got := d.must("exec", "cp", "--", "readlink", "/work/tree/sub/link"); got != "../run.sh\n" {
		t.Errorf("symlink in the sandbox reads %q", got)
	}
	back := filepath.Join(local, "back")
	d.must("cp", "cp:/work/tree", back)
	got := treeFacts(t, back)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: came back as %+v, want %+v", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("came back with %d entries, want %d", len(got), len(want))
	}
	// Into an existing directory: under the source's name.
	d.must("cp", "cp:/work/tree/run.sh", local)
	if b, _ := os.ReadFile(filepath.Join(local, "run.sh")); string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("run.sh copied into a directory reads %q", b)
	}

	// Into an existing directory, both ends agreeing on the entry: a
	// directory's contents ("DIR/."), and a path through ".." (its
	// lexical base name, "tree").
	for i, c := range []struct{ src, under string }{{"cp:/work/tree/.", ""}, {"cp:/work/tree/sub/..", "tree"}} {
		p := c.src
		into := filepath.Join(local, fmt.Sprintf("contents%d", i))
		os.Mkdir(into, 0o755)
		d.must("cp", p, into)
		into = filepath.Join(into, c.under)
		if b, _ := os.ReadFile(filepath.Join(into, "sub/deep/data")); len(b) != 300000 {
			t.Errorf("%s: sub/deep/data has %d bytes", p, len(b))
		}
		if l, _ := os.Readlink(filepath.Join(into, "sub/link")); l != "../run.sh" {
			t.Errorf("%s: link reads %q", p, l)
		}
	}

	// Tar streams: out to stdout, in from stdin.
	out, errOut, code := d.ctl("cp", "cp:/work/tree", "-")
	if code != 0 {
		t.Fatalf("cp to -: %d %s", code, errOut)
	}
	var names []string
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, " ") != "tree/ tree/empty tree/run.sh tree/sub/ tree/sub/deep/ tree/sub/deep/data tree/sub/link" {
		t.Errorf("tar stream names: %v", names)
	}
	d.must("exec", "cp", "--", "mkdir", "/work/fromtar")
	if _, e, code := d.ctlIn([]byte(out), "cp", "-", "cp:/work/fromtar"); code != 0 {
		t.Fatalf("cp - : %d %s", code, e)
	}
	if got := d.must("exec", "cp", "--", "cat", "/work/fromtar/tree/run.sh"); got != "#!/bin/sh\necho hi\n" {
		t.Errorf("from the tar stream: %q", got)
	}

	// Errors name the path and say what to do.
	if _, e, code := d.ctl("cp", "cp:/nonexistent", filepath.Join(local, "x")); code != 1 || !strings.Contains(e, "/nonexistent") {
		t.Errorf("missing source: exit %d, %q", code, e)
	}
	if _, e, code := d.ctl("cp", "nosuch:/x", local); code != 1 || !strings.Contains(e, `sandbox "nosuch" not found`) {
		t.Errorf("missing sandbox: exit %d, %q", code, e)
	}
	if _, e, code := d.ctl("cp", src, filepath.Join(local, "y")); code != 2 || !strings.Contains(e, "NAME:PATH") {
		t.Errorf("two local paths: exit %d, %q", code, e)
	}

	// 200 MiB, both ways, hash compared; msbctl stays far below the size.
	big := filepath.Join(local, "big")
	f, _ := os.Create(big)
	chunk := make([]byte, 1<<20)
	for i := range 200 {
		for j := range chunk {
			chunk[j] = byte(i ^ j*31)
		}
		f.Write(chunk)
	}
	f.Close()
	sum := fileSum(t, big)
	_, e, code, rss := d.ctlRusage("cp", big, "cp:/work/big")
	if code != 0 {
		t.Fatalf("cp big in: %d %s", code, e)
	}
	t.Logf("msbctl cp 200 MiB in: max RSS %d MiB", rss>>20)
	if rss > 64<<20 {
		t.Errorf("msbctl used %d MiB copying 200 MiB in; it must stream", rss>>20)
	}
	if got := d.must("exec", "cp", "--", "sha256sum", "/work/big"); !strings.HasPrefix(got, sum) {
		t.Errorf("in the sandbox: %q, want %s", got, sum)
	}
	_, e, code, rss = d.ctlRusage("cp", "cp:/work/big", filepath.Join(local, "big2"))
	if code != 0 {
		t.Fatalf("cp big out: %d %s", code, e)
	}
	t.Logf("msbctl cp 200 MiB out: max RSS %d MiB", rss>>20)
	if rss > 64<<20 {
		t.Errorf("msbctl used %d MiB copying 200 MiB out; it must stream", rss>>20)
	}
	if got := fileSum(t, filepath.Join(local, "big2")); got != sum {
		t.Errorf("200 MiB came back as %s, want %s", got, sum)
	}
}

// TestCopyHostileSandbox: symlinks a sandbox plants never make a copy write
// outside its destination, on the host or in the sandbox.
func TestCopyHostileSandbox(t *testing.T) {
	d := startDaemon(t)
	d.apply(sandboxYAML("evil", "", "sleep", "1000"))
	d.must("wait", "sandbox/evil", "--for=condition=Ready", "--timeout=60s")
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	os.WriteFile(canary, []byte("untouched"), 0o644)

	cases := []struct{ name, plant, refused string }{
		{"absolute symlink", "mkdir -p /e1/d && ln -s / /e1/d/root", "e1/d/root"},
		{"symlink to a host-looking file", "mkdir -p /e2 && ln -s " + canary + " /e2/canary", "e2/canary"},
		{"relative symlink out", "mkdir -p /e3/a && ln -s ../../../../../.. /e3/a/up", "e3/a/up"},
		// Lexically inside (e4/canary), physically out through d/s -> ..
		{"symlink chained through another", "mkdir -p /e4/d && ln -s .. /e4/d/s && ln -s d/s/../canary /e4/a", "e4/a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.must("exec", "evil", "--", "sh", "-c", c.plant)
			top := strings.Split(c.refused, "/")[0]
			dest := filepath.Join(base, "dest-"+top)
			_, e, code := d.ctl("cp", "evil:/"+top, dest)
			if code != 1 || !strings.Contains(e, c.refused) || !strings.Contains(e, "refused") {
				t.Errorf("exit %d, stderr %q: want a refusal naming %s", code, e, c.refused)
			}
			if b, _ := os.ReadFile(canary); string(b) != "untouched" {
				t.Errorf("canary now %q", b)
			}
			filepath.WalkDir(dest, func(p string, de fs.DirEntry, err error) error {
				if de != nil && de.Type()&fs.ModeSymlink != 0 {
					t.Errorf("symlink %s left on the host", p)
				}
				return nil
			})
		})
	}

	// Into the sandbox: a symlink planted below the destination is never
	// followed. A directory entry replaces it; an entry below it without
	// one is refused, naming the entry.
	plant := "rm -rf /dst /target; mkdir -p /dst /target && ln -s /target /dst/sub"
	d.must("exec", "evil", "--", "sh", "-c", plant)
	src := filepath.Join(base, "up")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub/x"), []byte("x"), 0o644)
	d.must("cp", src+"/.", "evil:/dst")
	if out, _, _ := d.ctl("exec", "evil", "--", "ls", "/target"); out != "" {
		t.Errorf("the copy followed the planted symlink: /target holds %q", out)
	}
	if got := d.must("exec", "evil", "--", "sh", "-c", "test -L /dst/sub || cat /dst/sub/x"); got != "x" {
		t.Errorf("/dst/sub/x: %q", got)
	}
	d.must("exec", "evil", "--", "sh", "-c", plant)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "sub/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	_, e, code := d.ctlIn(tb.Bytes(), "cp", "-", "evil:/dst")
	if code != 1 || !strings.Contains(e, `"sub/x"`) || !strings.Contains(e, "symlink") {
		t.Errorf("a tar entry below a planted symlink: exit %d, %q", code, e)
	}
	if out, _, _ := d.ctl("exec", "evil", "--", "ls", "/target"); out != "" {
		t.Errorf("the copy followed the planted symlink: /target holds %q", out)
	}
	// The control: without the planted link the same stream lands.
	d.must("exec", "evil", "--", "rm", "/dst/sub")
	if _, e, code := d.ctlIn(tb.Bytes(), "cp", "-", "evil:/dst"); code != 0 {
		t.Fatalf("control: exit %d, %q", code, e)
	}
	if got := d.must("exec", "evil", "--", "cat", "/dst/sub/x"); got != "x" {
		t.Errorf("control copy: %q", got)
	}
}

// TestCopyUnderKrun: msbctl cp works the same with the microVM driver (the
// stand-in libkrun runs the real agent chrooted in the guest's root).
func TestCopyUnderKrun(t *testing.T) {
	d, _ := startKrunDaemon(t)
	d.apply(sandboxYAML("vmcp", "", "sleep", "100000"))
	d.must("wait", "sandbox/vmcp", "--for=condition=Ready", "--timeout=60s")
	if drv := field(d.sandbox("vmcp"), "status.driver"); drv != "krun" {
		t.Fatalf("driver %v, want krun", drv)
	}
	local := t.TempDir()
	src := filepath.Join(local, "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.WriteFile(filepath.Join(src, "sub/f"), bytes.Repeat([]byte("vm"), 70000), 0o604)
	os.Symlink("sub/f", filepath.Join(src, "link"))
	want := treeFacts(t, src)
	d.must("cp", src, "vmcp:/tmp/tree")
	if got := d.must("exec", "vmcp", "--", "stat", "-c", "%a %s", "/tmp/tree/sub/f"); got != "604 140000\n" {
		t.Errorf("in the guest: %q", got)
	}
	back := filepath.Join(local, "back")
	d.must("cp", "vmcp:/tmp/tree", back)
	got := treeFacts(t, back)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: came back as %+v, want %+v", k, got[k], w)
		}
	}
	d.must("exec", "vmcp", "--", "sh", "-c", "mkdir -p /tmp/evil && ln -s / /tmp/evil/root")
	if _, e, code := d.ctl("cp", "vmcp:/tmp/evil", filepath.Join(local, "evil")); code != 1 || !strings.Contains(e, `"evil/root"`) {
		t.Errorf("planted symlink under krun: exit %d, %q", code, e)
	}
}
