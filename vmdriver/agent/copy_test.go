package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"msb.dev/msb/tarcopy"
)

// TestCopyBothWays sends a tree to the agent and reads it back through the
// agent's copy sessions, and checks that failures come back as exit 1 with
// the reason.
func TestCopyBothWays(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "tree/sub"), 0o755)
	os.WriteFile(filepath.Join(src, "tree/sub/f"), []byte("hello"), 0o640)
	os.WriteFile(filepath.Join(src, "tree/empty"), nil, 0o600)
	sandbox := t.TempDir()

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarcopy.Write(pw, filepath.Join(src, "tree"), nil)) }()
	var stderr bytes.Buffer
	code, err := c.Copy(context.Background(), CopyRequest{Direction: CopyToSandbox, Path: filepath.Join(sandbox, "dst"), Stdin: pr, Stderr: &stderr})
	if err != nil || code != 0 {
		t.Fatalf("copy to: %d, %v, %s", code, err, stderr.String())
	}
	if b, _ := os.ReadFile(filepath.Join(sandbox, "dst/sub/f")); string(b) != "hello" {
		t.Fatalf("dst/sub/f = %q", b)
	}

	pr, pw = io.Pipe()
	back := t.TempDir()
	done := make(chan error, 1)
	go func() { done <- tarcopy.Extract(pr, filepath.Join(back, "again"), tarcopy.Options{}) }()
	code, err = c.Copy(context.Background(), CopyRequest{Direction: CopyFromSandbox, Path: filepath.Join(sandbox, "dst"), Stdout: pw, Stderr: &stderr})
	pw.Close()
	if err != nil || code != 0 {
		t.Fatalf("copy from: %d, %v, %s", code, err, stderr.String())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(back, "again/sub/f"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("again/sub/f: %v %v", fi, err)
	}

	// A missing source: exit 1 and the reason names the path.
	stderr.Reset()
	code, err = c.Copy(context.Background(), CopyRequest{Direction: CopyFromSandbox, Path: filepath.Join(sandbox, "nope"), Stdout: io.Discard, Stderr: &stderr})
	if err != nil || code != 1 || !strings.Contains(stderr.String(), "nope") {
		t.Fatalf("missing source: %d, %v, %q", code, err, stderr.String())
	}
	// A planted symlink below the destination is not followed.
	os.Symlink(t.TempDir(), filepath.Join(sandbox, "dst/planted"))
	stderr.Reset()
	var b bytes.Buffer
	craftOne(&b, "planted/x")
	code, err = c.Copy(context.Background(), CopyRequest{Direction: CopyToSandbox, Path: filepath.Join(sandbox, "dst"), Into: true, Stdin: &b, Stderr: &stderr})
	if err != nil || code != 1 || !strings.Contains(stderr.String(), "planted/x") {
		t.Fatalf("planted symlink: %d, %v, %q", code, err, stderr.String())
	}
}

func craftOne(w io.Writer, name string) error {
	tw := tar.NewWriter(w)
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	return tw.Close()
}

// TestCopyIntoSandboxFollowsNoPlantedLink (L3): the workload (uid 1000)
// plants symlinks from its directory to a root-owned one; a copy to them,
// or through them, is refused and writes nothing there, while an image's
// root-owned link in a root-owned directory is followed as before.
func TestCopyIntoSandboxFollowsNoPlantedLink(t *testing.T) {
	cfg := sleeper()
	cfg.UID, cfg.GID = 1000, 1000
	a := startAgent(t, "", cfg)
	c := a.dial(t)
	sandbox := t.TempDir()
	work, etc := filepath.Join(sandbox, "work"), filepath.Join(sandbox, "etc")
	os.Mkdir(work, 0o755)
	os.Chown(work, 1000, 1000)
	os.Mkdir(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0"), 0o644)
	for _, l := range []string{"in", "via"} {
		os.Symlink("../etc", filepath.Join(work, l))
		os.Lchown(filepath.Join(work, l), 1000, 1000)
	}
	os.Symlink("etc", filepath.Join(sandbox, "lib")) // root's, in a root-owned 0700 dir

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "passwd"), []byte("evil::0:0"), 0o644)
	send := func(dest string) (int, string) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(tarcopy.Write(pw, filepath.Join(src, "passwd"), nil)) }()
		var stderr bytes.Buffer
		code, err := c.Copy(context.Background(), CopyRequest{Direction: CopyToSandbox, Path: dest, Stdin: pr, Stderr: &stderr})
		pr.Close()
		if err != nil {
			t.Fatal(err)
		}
		return code, stderr.String()
	}
	for _, dest := range []string{filepath.Join(work, "in"), filepath.Join(work, "via/passwd"), filepath.Join(work, "in/")} {
		code, msg := send(dest)
		if code != 1 || !strings.Contains(msg, "symlink") {
			t.Errorf("copy to %s: exit %d, %q: want a refusal naming the symlink", dest, code, msg)
		}
		if b, _ := os.ReadFile(filepath.Join(etc, "passwd")); string(b) != "root:x:0:0" {
			t.Fatalf("copy to %s wrote through the planted link: passwd now %q", dest, b)
		}
	}
	// The controls: the workload's own directory, and the image's link.
	if code, msg := send(filepath.Join(work, "mine")); code != 0 {
		t.Fatalf("copy to work/mine: %d %s", code, msg)
	}
	if code, msg := send(filepath.Join(sandbox, "lib/new")); code != 0 {
		t.Fatalf("copy to lib/new: %d %s", code, msg)
	}
	if b, _ := os.ReadFile(filepath.Join(etc, "new")); string(b) != "evil::0:0" {
		t.Errorf("etc/new (through the image's link) reads %q", b)
	}
}
