package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// logWriter appends the main command's output to dir/log and rotates it to log.1
// when it reaches half the cap, so log+log.1 never exceed the cap while the most
// recent half of the output is always complete. Bytes are written as they come:
// no line framing, no timestamps, so what the user reads is what the program wrote.
// Rotation happens at a line boundary (only a line longer than half the cap is
// cut), so what is kept starts at the start of a line; the bytes a rotation
// drops are counted in dir/log.dropped, and readers say so before the log.
type logWriter struct {
	dir     string
	half    int64
	f       *os.File
	size    int64
	dropped int64 // bytes of output rotated away, over every run
	// lineStart: the file ends at a line end (or is empty), so a rotation
	// now leaves no line in two pieces.
	lineStart bool
	err       error     // first write error, kept for diagnostics; writing never blocks the producer
	idx       *logIndex // when lines were written (logtime.go)
}

// LogDroppedFile counts the bytes of output the log cap dropped (decimal).
const LogDroppedFile = "log.dropped"

// ReadLogDropped returns how many bytes of the sandbox's output the log cap
// has dropped: 0 when none or unknown. The sandbox can write the file, so
// anything but a plain count reads as 0.
func ReadLogDropped(dir string) int64 {
	f, err := openSandboxFile(filepath.Join(dir, LogDroppedFile))
	if err != nil {
		return 0
	}
	defer f.Close()
	b := make([]byte, 24)
	n, _ := io.ReadFull(f, b)
	v, err := strconv.ParseInt(strings.TrimSpace(string(b[:n])), 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// droppedMarker is the line readers print before a log whose head was dropped.
func droppedMarker(dropped int64) string {
	return fmt.Sprintf("[msb: %d bytes of earlier output were dropped: the log keeps the most recent output only]\n", dropped)
}

func openLog(dir string, maxBytes int64) (*logWriter, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	half := maxBytes / 2
	if half < 1 {
		half = 1
	}
	// Append: a restarted sandbox keeps the output of its previous runs.
	f, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	lw := &logWriter{dir: dir, half: half, f: f, size: fi.Size(), dropped: ReadLogDropped(dir), lineStart: true,
		idx: openLogIndex(dir, fi.Size() == 0)}
	lw.idx.markRun(lw.size, time.Now())
	return lw, nil
}

// Write always reports success: a full disk must not make the main command block
// on its stdout or die of SIGPIPE. The first error is remembered in l.err.
//
// A file is rotated at the first line end past soft (half the cap less a
// slack of up to 4 KiB), so the kept output starts at the start of a line;
// only a line longer than the slack is cut at half the cap.
func (l *logWriter) Write(p []byte) (int, error) {
	n := len(p)
	soft := l.half - min(4096, l.half/4)
	for len(p) > 0 && l.err == nil {
		hard := l.half - l.size
		if hard <= 0 || (l.size >= soft && l.lineStart) {
			l.err = l.rotate()
			continue
		}
		chunk := p[:min(int64(len(p)), hard)]
		if l.size+int64(len(chunk)) > soft {
			from := max(0, soft-l.size)
			if i := bytes.IndexByte(chunk[from:], '\n'); i >= 0 {
				chunk = chunk[:from+int64(i)+1]
			}
		}
		if ls := lineStartIn(chunk, l.size, l.lineStart); ls >= 0 {
			l.idx.mark(ls, time.Now(), l.half)
		}
		w, err := l.f.Write(chunk)
		l.size += int64(w)
		if w > 0 {
			l.lineStart = chunk[w-1] == '\n'
		}
		p = p[w:]
		if err != nil {
			l.err = err
		}
	}
	return n, nil
}

func (l *logWriter) rotate() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	cur := filepath.Join(l.dir, LogFile)
	if fi, err := os.Lstat(filepath.Join(l.dir, LogOldFile)); err == nil && fi.Mode().IsRegular() {
		l.dropped += fi.Size()
		// Best effort: a lost count must not stop the logging.
		_ = writeFileAtomic(filepath.Join(l.dir, LogDroppedFile), []byte(strconv.FormatInt(l.dropped, 10)+"\n"))
	}
	if err := os.Rename(cur, filepath.Join(l.dir, LogOldFile)); err != nil {
		return err
	}
	l.idx.close()
	os.Rename(filepath.Join(l.dir, LogIndexFile), filepath.Join(l.dir, LogOldIndexFile))
	l.idx = openLogIndex(l.dir, true)
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	l.f, l.size = f, 0
	return nil
}

func (l *logWriter) Close() error {
	l.idx.close()
	return l.f.Close()
}

// ReadLog writes the log kept in dir (log.1, then log) to w, after a marker
// line when the log cap dropped earlier output.
func ReadLog(dir string, w io.Writer) error {
	cur, old, err := openLogs(dir)
	if err != nil {
		return err
	}
	if d := ReadLogDropped(dir); d > 0 {
		if _, err := io.WriteString(w, droppedMarker(d)); err != nil {
			return err
		}
	}
	if old != nil {
		_, err = copyTail(w, old)
		old.Close()
		if err != nil {
			cur.Close()
			return err
		}
	}
	if cur == nil {
		return nil
	}
	defer cur.Close()
	_, err = copyTail(w, cur)
	return err
}

// followPoll is how often FollowLog looks for new data; logs -f is not latency critical.
const followPoll = 50 * time.Millisecond

// FollowLog writes the log kept in dir to w, then keeps writing what is appended,
// following rotation, until ctx is done (then it returns nil). It reads the files,
// not the agent, so it works before the agent starts and after it is gone.
// If the log rotates more than once between two polls, the middle part is lost.
func FollowLog(ctx context.Context, dir string, w io.Writer) error {
	return FollowLogLines(ctx, dir, w, LogReadOptions{Tail: -1})
}

// tailLines keeps what is written to it and, on flush, writes its last n
// lines (all when n < 0) to w.
type tailLines struct {
	w   io.Writer
	n   int
	buf bytes.Buffer
}

func (t *tailLines) Write(p []byte) (int, error) { return t.buf.Write(p) }

func (t *tailLines) flush() error {
	b := t.buf.Bytes()
	if t.n >= 0 {
		end := len(b)
		if end > 0 && b[end-1] == '\n' {
			end-- // a last line ending in a newline is one line, not two
		}
		for i, seen := end-1, 0; i >= 0; i-- {
			if b[i] == '\n' {
				if seen++; seen == t.n {
					b = b[i+1:]
					break
				}
			}
		}
		if t.n == 0 {
			b = nil
		}
	}
	_, err := t.w.Write(b)
	t.buf.Reset()
	return err
}

// ReadLogTail is ReadLog of the last n lines only (all when n < 0).
func ReadLogTail(dir string, w io.Writer, n int) error {
	if n < 0 {
		return ReadLog(dir, w)
	}
	t := &tailLines{w: w, n: n}
	if err := ReadLog(dir, t); err != nil {
		return err
	}
	return t.flush()
}

// openLogs opens log before log.1: if a rotation happens in between, log.1 is the
// file already open as log, detected by inode and skipped, so nothing is printed twice.
func openLogs(dir string) (cur, old *os.File, err error) {
	cur, err = openSandboxFile(filepath.Join(dir, LogFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	if err != nil {
		cur = nil
	}
	old, err = openSandboxFile(filepath.Join(dir, LogOldFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cur, nil, nil
		}
		if cur != nil {
			cur.Close()
		}
		return nil, nil, err
	}
	if cur != nil && sameFile(cur, filepath.Join(dir, LogOldFile)) {
		old.Close()
		old = nil
	}
	return cur, old, nil
}

// sameFile reports whether the open f is still the file at path.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	as, aok := a.Sys().(*syscall.Stat_t)
	bs, bok := b.Sys().(*syscall.Stat_t)
	return aok && bok && as.Ino == bs.Ino && as.Dev == bs.Dev
}

// maxLogRead bounds what is read of one log file per pass, well above any
// log cap: the sandbox can write the files directly (bypassing the agent's
// cap), and a sparse file claiming exabytes must not stream zeros forever.
const maxLogRead = 64 << 20

// copyTail copies what f holds from its offset to w; when that is more than
// maxLogRead, only the last maxLogRead bytes.
func copyTail(w io.Writer, f *os.File) (int64, error) {
	if fi, err := f.Stat(); err == nil {
		if pos, err := f.Seek(0, io.SeekCurrent); err == nil && fi.Size()-pos > maxLogRead {
			if _, err := f.Seek(fi.Size()-maxLogRead, io.SeekStart); err != nil {
				return 0, err
			}
		}
	}
	return io.Copy(w, io.LimitReader(f, maxLogRead))
}
