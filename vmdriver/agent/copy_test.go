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
