package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestReadLogBoundsSparseFile: a sandbox can replace its log with a sparse
// file claiming a terabyte; reading it sends at most maxLogRead bytes.
func TestReadLogBoundsSparseFile(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 40); err != nil {
		t.Skipf("no sparse files here: %v", err)
	}
	f.WriteAt([]byte("tail\n"), 1<<40)
	f.Close()
	var c countingWriter
	if err := ReadLog(dir, &c); err != nil {
		t.Fatal(err)
	}
	if c.n == 0 || c.n > maxLogRead {
		t.Fatalf("read %d bytes of a sparse log, want 1..%d", c.n, maxLogRead)
	}
}

func TestReadLogTail(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, LogFile), []byte("a\nb\nc\n"), 0o600)
	os.WriteFile(filepath.Join(dir, LogOldFile), []byte("old1\nold2\n"), 0o600)
	for n, want := range map[int]string{-1: "old1\nold2\na\nb\nc\n", 0: "", 1: "c\n", 4: "old2\na\nb\nc\n", 99: "old1\nold2\na\nb\nc\n"} {
		var b bytes.Buffer
		if err := ReadLogTail(dir, &b, n); err != nil || b.String() != want {
			t.Errorf("ReadLogTail(%d) = %q, %v; want %q", n, b.String(), err, want)
		}
	}
	// A last line without its newline counts as a line.
	os.WriteFile(filepath.Join(dir, LogFile), []byte("a\nb\npartial"), 0o600)
	var b bytes.Buffer
	if ReadLogTail(dir, &b, 2); b.String() != "b\npartial" {
		t.Errorf("tail of a log ending mid-line = %q", b.String())
	}
}
