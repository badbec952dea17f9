package agent

import (
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
