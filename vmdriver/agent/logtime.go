package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The log keeps bytes as the program wrote them; when lines were written is
// kept beside it, in log.idx (log.1.idx for log.1): one "OFFSET UNIXNANO"
// line for a line start in the log file, at most one per millisecond, so
// msbctl logs --timestamps and --since can tell a line's time within a
// millisecond. Lines without an entry of their own take the time of the
// entry before them. The index rotates with the log and is capped at half
// the log cap.
const (
	LogIndexFile    = "log.idx"
	LogOldIndexFile = "log.1.idx"
)

// logIndex appends the entries of the log file being written.
type logIndex struct {
	f    *os.File
	size int64
	last time.Time
}

// markRun records that a run of the main command starts at off: "R OFFSET
// UNIXNANO" (logs --previous reads the run before the last).
func (x *logIndex) markRun(off int64, t time.Time) {
	if x == nil {
		return
	}
	n, _ := fmt.Fprintf(x.f, "R %d %d\n", off, t.UnixNano())
	x.size += int64(n)
}

// readRunStarts returns the offsets where runs start in the log file an
// index file describes.
func readRunStarts(path string) []int64 {
	f, err := openSandboxFile(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int64
	sc := bufio.NewScanner(io.LimitReader(f, maxLogRead))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "R "); ok {
			o, _, _ := strings.Cut(rest, " ")
			if off, err := strconv.ParseInt(o, 10, 64); err == nil && off >= 0 {
				out = append(out, off)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func openLogIndex(dir string, trunc bool) *logIndex {
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if trunc {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(filepath.Join(dir, LogIndexFile), flags, 0o600)
	if err != nil {
		return nil // best effort: the log works without times
	}
	fi, _ := f.Stat()
	x := &logIndex{f: f}
	if fi != nil {
		x.size = fi.Size()
	}
	return x
}

// mark records that a line starts at off, written at t.
func (x *logIndex) mark(off int64, t time.Time, limit int64) {
	if x == nil || t.Sub(x.last) < time.Millisecond || x.size >= limit {
		return
	}
	n, _ := fmt.Fprintf(x.f, "%d %d\n", off, t.UnixNano())
	x.size += int64(n)
	x.last = t
}

func (x *logIndex) close() {
	if x != nil {
		x.f.Close()
	}
}

// lineStartIn returns the offset in the file of the first line that starts
// in chunk, written at size with lineStart telling whether the file ended a
// line; -1 when none does.
func lineStartIn(chunk []byte, size int64, lineStart bool) int64 {
	if lineStart {
		return size
	}
	if i := bytes.IndexByte(chunk, '\n'); i >= 0 && i+1 < len(chunk) {
		return size + int64(i) + 1
	}
	return -1
}

type indexEntry struct {
	off int64
	t   time.Time
}

// readLogIndex reads an index file; entries the sandbox may have mangled are
// skipped, and the rest are sorted by offset.
func readLogIndex(path string) []indexEntry {
	f, err := openSandboxFile(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []indexEntry
	sc := bufio.NewScanner(io.LimitReader(f, maxLogRead))
	for sc.Scan() {
		o, t, ok := strings.Cut(sc.Text(), " ")
		off, err1 := strconv.ParseInt(o, 10, 64)
		ns, err2 := strconv.ParseInt(t, 10, 64)
		if ok && err1 == nil && err2 == nil && off >= 0 {
			out = append(out, indexEntry{off, time.Unix(0, ns).UTC()})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].off < out[j].off })
	return out
}

// LogReadOptions select what ReadLogLines prints.
type LogReadOptions struct {
	Tail       int       // last lines only; -1 all
	Timestamps bool      // prefix each line with its RFC 3339 time
	Since      time.Time // only lines written at or after (zero: all)
	// Previous: only the output of the run before the current one (the
	// main command's previous start, after a restart).
	Previous bool
}

// ErrNoPreviousRun is ReadLogLines' answer to Previous when the log holds
// one run only.
var ErrNoPreviousRun = errors.New("the log holds no previous run: the sandbox has not been restarted, or that run's output was dropped by the log cap")

// ReadLogLines is ReadLog line by line with the times of log.idx: the lines
// written since opts.Since, the last opts.Tail of them, each prefixed with
// its time when opts.Timestamps. A line whose time is unknown (written
// before the index existed) counts as written at the start.
func ReadLogLines(dir string, w io.Writer, opts LogReadOptions) error {
	cur, old, err := openLogs(dir)
	if err != nil {
		return err
	}
	var lines [][]byte
	var runOf []int // per line, the number of run starts at or before it
	runs := 0
	add := func(f *os.File, idx string) error {
		if f == nil {
			return nil
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxLogRead))
		if err != nil {
			return err
		}
		entries := readLogIndex(filepath.Join(dir, idx))
		starts := readRunStarts(filepath.Join(dir, idx))
		e := -1
		for off := 0; off < len(b); {
			end := bytes.IndexByte(b[off:], '\n')
			if end < 0 {
				end = len(b)
			} else {
				end += off + 1
			}
			for e+1 < len(entries) && entries[e+1].off <= int64(off) {
				e++
			}
			for len(starts) > 0 && starts[0] <= int64(off) {
				runs++
				starts = starts[1:]
			}
			var t time.Time
			if e >= 0 {
				t = entries[e].t
			}
			line := b[off:end]
			off = end
			if !opts.Since.IsZero() && t.Before(opts.Since) {
				continue
			}
			if opts.Timestamps {
				stamp := "-"
				if !t.IsZero() {
					stamp = t.Format(time.RFC3339Nano)
				}
				line = append([]byte(stamp+" "), line...)
			}
			lines = append(lines, line)
			runOf = append(runOf, runs)
		}
		return nil
	}
	if err := add(old, LogOldIndexFile); err != nil {
		if cur != nil {
			cur.Close()
		}
		return err
	}
	if err := add(cur, LogIndexFile); err != nil {
		return err
	}
	if opts.Previous {
		// The current run began at the last run start; the previous one
		// at the start before it, or, if that was dropped, with the log.
		if runs == 0 || (runs == 1 && (len(runOf) == 0 || runOf[0] == 1)) {
			return ErrNoPreviousRun
		}
		var prev [][]byte
		for i, l := range lines {
			if runOf[i] == runs-1 {
				prev = append(prev, l)
			}
		}
		lines = prev
	}
	if d := ReadLogDropped(dir); d > 0 && opts.Since.IsZero() && !opts.Previous {
		lines = append([][]byte{[]byte(droppedMarker(d))}, lines...)
	}
	if opts.Tail >= 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	for _, l := range lines {
		if _, err := w.Write(l); err != nil {
			return err
		}
	}
	return nil
}

// idxTail reads a log file's index as it grows: entries appended since the
// last read are added; a partial last line waits for its end.
type idxTail struct {
	f       *os.File
	partial []byte
	entries []indexEntry
}

func (x *idxTail) refresh() {
	if x == nil || x.f == nil {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(x.f, maxLogRead))
	b = append(x.partial, b...)
	end := bytes.LastIndexByte(b, '\n')
	x.partial = append([]byte(nil), b[end+1:]...)
	for _, l := range strings.Split(string(b[:end+1]), "\n") {
		o, t, ok := strings.Cut(l, " ")
		off, err1 := strconv.ParseInt(o, 10, 64)
		ns, err2 := strconv.ParseInt(t, 10, 64)
		if ok && err1 == nil && err2 == nil && off >= 0 && (len(x.entries) == 0 || off >= x.entries[len(x.entries)-1].off) {
			x.entries = append(x.entries, indexEntry{off, time.Unix(0, ns).UTC()})
		}
	}
}

// at returns the time of the line starting at off: that of the last entry
// at or before it (zero when none).
func (x *idxTail) at(off int64) time.Time {
	if x == nil {
		return time.Time{}
	}
	if len(x.entries) == 0 || x.entries[len(x.entries)-1].off < off {
		x.refresh()
	}
	i := sort.Search(len(x.entries), func(i int) bool { return x.entries[i].off > off })
	if i == 0 {
		return time.Time{}
	}
	return x.entries[i-1].t
}

func (x *idxTail) close() {
	if x != nil && x.f != nil {
		x.f.Close()
	}
}

// stamper passes one log file's bytes on line by line, from file offset
// off: with times prefixed, and lines older than since left out.
type stamper struct {
	w         io.Writer
	opts      LogReadOptions
	idx       *idxTail
	off       int64
	lineStart bool
	dropping  bool
}

func (s *stamper) Write(p []byte) (int, error) {
	n := len(p)
	timed := s.opts.Timestamps || !s.opts.Since.IsZero()
	for len(p) > 0 {
		if s.lineStart && timed {
			t := s.idx.at(s.off)
			s.dropping = !s.opts.Since.IsZero() && t.Before(s.opts.Since)
			if s.opts.Timestamps && !s.dropping {
				stamp := "-"
				if !t.IsZero() {
					stamp = t.Format(time.RFC3339Nano)
				}
				if _, err := io.WriteString(s.w, stamp+" "); err != nil {
					return 0, err
				}
			}
		}
		seg := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			seg = p[:i+1]
		}
		if !s.dropping {
			if _, err := s.w.Write(seg); err != nil {
				return 0, err
			}
		}
		s.off += int64(len(seg))
		s.lineStart = seg[len(seg)-1] == '\n'
		p = p[len(seg):]
	}
	return n, nil
}

// FollowLogLines is FollowLog starting with the last opts.Tail lines (all
// when negative), with times (opts.Timestamps) and a starting time
// (opts.Since) from the index beside the log when asked for.
func FollowLogLines(ctx context.Context, dir string, out io.Writer, opts LogReadOptions) error {
	var w io.Writer = out
	var tail *tailLines
	if opts.Tail >= 0 {
		tail = &tailLines{w: out, n: opts.Tail}
		w = tail
	}
	// The writer may be opening the index of a fresh file: open the log
	// first, as openLogs does, and each file's index right after it.
	openIdx := func(name string) *idxTail {
		if !opts.Timestamps && opts.Since.IsZero() {
			return &idxTail{} // no times asked for: the index is not read
		}
		f, err := openSandboxFile(filepath.Join(dir, name))
		if err != nil {
			return &idxTail{}
		}
		return &idxTail{f: f}
	}
	cur, old, err := openLogs(dir)
	if err != nil {
		return err
	}
	curIdx := openIdx(LogIndexFile)
	defer func() { curIdx.close() }()
	if d := ReadLogDropped(dir); d > 0 && opts.Since.IsZero() {
		if _, err := io.WriteString(w, droppedMarker(d)); err != nil {
			return err
		}
	}
	if old != nil {
		oldIdx := openIdx(LogOldIndexFile)
		_, err = copyTail(&stamper{w: w, opts: opts, idx: oldIdx, lineStart: true}, old)
		oldIdx.close()
		old.Close()
		if err != nil {
			if cur != nil {
				cur.Close()
			}
			return err
		}
	}
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	st := &stamper{w: w, opts: opts, idx: curIdx, lineStart: true}
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for {
		if cur == nil {
			cur, err = openSandboxFile(filepath.Join(dir, LogFile))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if cur != nil {
				curIdx.close()
				curIdx = openIdx(LogIndexFile)
				st = &stamper{w: w, opts: opts, idx: curIdx, lineStart: true}
			}
		}
		if cur != nil {
			if _, err := copyTail(st, cur); err != nil {
				return err
			}
			if !sameFile(cur, filepath.Join(dir, LogFile)) {
				// Rotated: finish the old file (its index is open still).
				if _, err := copyTail(st, cur); err != nil {
					return err
				}
				cur.Close()
				cur = nil
				continue
			}
		}
		if tail != nil {
			if err := tail.flush(); err != nil {
				return err
			}
			tail = nil
			st.w, w = out, out
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
