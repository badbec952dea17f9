package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
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

// TestLogTimes: the writer records when lines start (log.idx, rotated with
// the log), and ReadLogLines prints times, keeps lines since a time, and
// tails.
func TestLogTimes(t *testing.T) {
	dir := t.TempDir()
	lw, err := openLog(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	lw.Write([]byte("one\ntwo\n"))
	time.Sleep(3 * time.Millisecond) // entries are at most one a millisecond
	lw.Write([]byte("thr"))
	lw.Write([]byte("ee\nfour\n"))
	lw.Close()
	entries := readLogIndex(filepath.Join(dir, LogIndexFile))
	if len(entries) != 2 || entries[0].off != 0 || entries[1].off != 8 || !entries[0].t.Before(entries[1].t) {
		t.Fatalf("index entries %+v: want line starts 0 and 8, in time order", entries)
	}
	var b bytes.Buffer
	if err := ReadLogLines(dir, &b, LogReadOptions{Tail: -1, Timestamps: true}); err != nil {
		t.Fatal(err)
	}
	t0, t1 := entries[0].t.Format(time.RFC3339Nano), entries[1].t.Format(time.RFC3339Nano)
	if want := t0 + " one\n" + t0 + " two\n" + t1 + " three\n" + t1 + " four\n"; b.String() != want {
		t.Errorf("with timestamps:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	ReadLogLines(dir, &b, LogReadOptions{Tail: -1, Since: entries[1].t})
	if b.String() != "three\nfour\n" {
		t.Errorf("since the second write: %q", b.String())
	}
	b.Reset()
	ReadLogLines(dir, &b, LogReadOptions{Tail: 1, Timestamps: true})
	if b.String() != t1+" four\n" {
		t.Errorf("tail 1 with timestamps: %q", b.String())
	}
	// A mangled index (the sandbox can write it) costs only the times.
	os.WriteFile(filepath.Join(dir, LogIndexFile), []byte("garbage\n-5 7\n"), 0o600)
	b.Reset()
	if err := ReadLogLines(dir, &b, LogReadOptions{Tail: -1, Timestamps: true}); err != nil || b.String() != "- one\n- two\n- three\n- four\n" {
		t.Errorf("with a mangled index: %q, %v", b.String(), err)
	}
}

// TestLogPrevious: every start of the main command is a run in log.idx, and
// Previous reads the run before the current one.
func TestLogPrevious(t *testing.T) {
	dir := t.TempDir()
	run := func(out string) {
		lw, err := openLog(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		lw.Write([]byte(out))
		lw.Close()
	}
	read := func() (string, error) {
		var b bytes.Buffer
		err := ReadLogLines(dir, &b, LogReadOptions{Tail: -1, Previous: true})
		return b.String(), err
	}
	run("first\n")
	if _, err := read(); !errors.Is(err, ErrNoPreviousRun) {
		t.Errorf("previous of the first run: %v", err)
	}
	run("second\nmore\n")
	if got, err := read(); got != "first\n" || err != nil {
		t.Errorf("previous after a restart = %q, %v", got, err)
	}
	run("third\n")
	if got, err := read(); got != "second\nmore\n" || err != nil {
		t.Errorf("previous after two restarts = %q, %v", got, err)
	}
}
