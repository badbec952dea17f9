package container

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// mountinfo is this process's mount table, read for every caller at most
// once at a time. Its size grows with every sandbox (a few mounts each),
// so deleting many sandboxes at once, each reading it, cost the square of
// their number; concurrent deletes now share reads.
var mountinfo = &sharedRead{path: "/proc/self/mountinfo"}

// sharedRead reads a file for concurrent callers, sharing reads without
// handing anyone a stale one: a caller gets the content of a read that
// began after it called. While one read runs, callers that come wait for
// the next, which they all share.
type sharedRead struct {
	path    string
	mu      sync.Mutex
	running bool
	next    *readResult // the read the callers waiting now will share
}

type readResult struct {
	done chan struct{}
	data []byte // shared: read only
	err  error
}

// read returns the file's content, read after read was called. Callers
// must not modify it.
func (s *sharedRead) read() ([]byte, error) {
	s.mu.Lock()
	if s.next == nil {
		s.next = &readResult{done: make(chan struct{})}
	}
	r := s.next
	if s.running {
		s.mu.Unlock()
		<-r.done
		return r.data, r.err
	}
	s.running, s.next = true, nil
	s.mu.Unlock()
	s.run(r)
	return r.data, r.err
}

// run does read r, then hands the next one (callers that came meanwhile)
// to a goroutine, so the caller that started r waits for r alone.
func (s *sharedRead) run(r *readResult) {
	r.data, r.err = os.ReadFile(s.path)
	close(r.done)
	s.mu.Lock()
	next := s.next
	s.next = nil
	if next == nil {
		s.running = false
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	go s.run(next)
}

// readMountTable returns the calling thread's mount table: the shared read
// of msbd's, or, on a thread of a start's own mount namespace (startns.go),
// that namespace's.
func readMountTable() ([]byte, error) {
	var self, thread unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/mnt", &thread) == nil && unix.Stat("/proc/self/ns/mnt", &self) == nil && thread.Ino != self.Ino {
		return os.ReadFile("/proc/thread-self/mountinfo")
	}
	return mountinfo.read()
}

// escapeMountinfo writes path as /proc/self/mountinfo does: space, tab,
// newline and backslash as a backslash and three octal digits.
func escapeMountinfo(path string) string {
	if !strings.ContainsAny(path, " \t\n\\") {
		return path
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		switch c := path[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
