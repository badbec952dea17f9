package container

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// Every caller of a shared read gets content read after it called: the
// file only holds growing numbers, so a caller that wrote n must read n or
// more, however the reads were shared.
func TestSharedReadNeverStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	s := &sharedRead{path: path}
	var mu sync.Mutex
	counter := 0
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp := path + ".tmp" + strconv.Itoa(i)
			for range 30 {
				mu.Lock()
				counter++
				n := counter
				os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o644)
				err := os.Rename(tmp, path) // atomic: readers see whole values
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				got, err := s.read()
				if err != nil {
					t.Error(err)
					return
				}
				if v, _ := strconv.Atoi(string(got)); v < n {
					t.Errorf("read %d after %d was written: a stale shared read", v, n)
				}
			}
		}()
	}
	wg.Wait()
}

func TestEscapeMountinfo(t *testing.T) {
	for _, p := range []string{"/a/b", "/with space/x", "/tab\there", `/back\slash`, "/new\nline"} {
		if got := unescapeMountinfo(escapeMountinfo(p)); got != p {
			t.Errorf("%q → %q → %q", p, escapeMountinfo(p), got)
		}
	}
	if got := escapeMountinfo("/a b"); got != `/a\040b` {
		t.Errorf("escape(/a b) = %q, want /a\\040b as the kernel writes it", got)
	}
}
