package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"msb.dev/msb/images"
)

// TestPullProgressThrottle checks the progress throttle of a pull stream against a
// fake clock (a synctest bubble), so the interval is exact and nothing depends on
// how fast the machine is: per layer, the first report and every completing one
// pass; another passes only once pullProgressInterval has gone by since the last
// line of that layer; nothing passes once the stream is finished.
func TestPullProgressThrottle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := httptest.NewRecorder()
		_, cancel := context.WithCancel(t.Context())
		defer cancel()
		st := &pullStream{w: rec, rc: http.NewResponseController(rec), cancel: cancel, last: map[string]time.Time{}}
		report := func(layer string, done int64, complete bool) {
			st.progress(images.Progress{Layer: layer, Total: 100, Done: done, Complete: complete})
		}

		for i := range 1000 { // a burst at one instant: only the first passes
			report("a", int64(i), false)
		}
		report("b", 1, false)                // another layer has its own interval
		time.Sleep(pullProgressInterval - 1) // one nanosecond short
		report("a", 2000, false)             // dropped
		time.Sleep(1)                        // exactly the interval since the first line of a
		report("a", 3000, false)             // passes
		report("a", 3001, false)             // dropped: no time has passed
		report("a", 100, true)               // completing: always passes
		report("b", 2, false)                // b's interval has gone by too
		st.finish()
		report("b", 100, true) // finished: dropped

		want := []string{"a 0", "b 1", "a 3000", "a 100 complete", "b 2"}
		var got []string
		sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
		for sc.Scan() {
			var l pullLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Progress == nil {
				t.Fatalf("line %q: %v, want a progress line", sc.Text(), err)
			}
			s := fmt.Sprintf("%s %d", l.Progress.Layer, l.Progress.Done)
			if l.Progress.Complete {
				s += " complete"
			}
			got = append(got, s)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("progress lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
