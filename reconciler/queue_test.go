package reconciler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The queue and controller tests that involve time run in synctest bubbles: the
// clock is fake and moves only when every goroutine of the test is blocked, so a
// delay of 30ms takes no real time and is exactly 30ms. The tests check exact
// instants and never sleep on the real clock. The queue needs nothing special
// for this: its timers (time.AfterFunc) and its sync.Cond are bubble-aware.

// getReady returns the keys ready now, in order, without blocking (every key is
// marked Done at once).
func getReady(q *Queue) []string {
	var keys []string
	for q.Len() > 0 {
		k, _ := q.Get()
		q.Done(k)
		keys = append(keys, k)
	}
	return keys
}

// advance moves the fake clock forward by d and lets every timer that fell due
// run to completion (a fired time.AfterFunc runs on its own goroutine).
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestQueueCollapsesRepeatedAdds(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	for i := 0; i < 10; i++ {
		q.Add("a")
	}
	q.Add("b")
	if got := q.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2", got)
	}
}

func TestQueueKeyNotProcessedTwiceAtOnce(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	q.Add("a")
	k, _ := q.Get()
	q.Add("a") // arrives while processing
	if q.Len() != 0 {
		t.Fatalf("a key being processed must not be handed out again")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatalf("Done must re-queue a key that became dirty while processing")
	}
}

func TestQueueBackoffDoublesAndForgetResets(t *testing.T) {
	q := NewQueue(10*time.Millisecond, 80*time.Millisecond)
	want := []time.Duration{10, 20, 40, 80, 80}
	for i, w := range want {
		if got := q.backoff(i); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	q.AddRateLimited("a")
	q.AddRateLimited("a")
	if q.Failures("a") != 2 {
		t.Fatalf("failures = %d", q.Failures("a"))
	}
	q.Forget("a")
	if q.Failures("a") != 0 {
		t.Fatalf("Forget must reset failures")
	}
	q.ShutDown()
}

// TestQueueRateLimitedDelays: each failure of a key makes it ready exactly
// base·2^failures later (capped at max), not a nanosecond sooner; Forget starts
// again from base.
func TestQueueRateLimitedDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(10*time.Millisecond, 40*time.Millisecond)
		defer q.ShutDown()
		check := func(want time.Duration) {
			t.Helper()
			q.AddRateLimited("a")
			advance(want - 1)
			if got := getReady(q); len(got) != 0 {
				t.Fatalf("after %v of a %v backoff: ready %v, want nothing yet", want-1, want, got)
			}
			advance(1)
			if got := getReady(q); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("after a %v backoff: ready %v, want [a]", want, got)
			}
		}
		for _, ms := range []time.Duration{10, 20, 40, 40} {
			check(ms * time.Millisecond)
		}
		q.Forget("a")
		check(10 * time.Millisecond)
	})
}

// TestQueueAddAfterDelivers: delayed keys come out at exactly their times, earliest
// first, to a worker blocked in Get.
func TestQueueAddAfterDelivers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, time.Second)
		start := time.Now()
		q.AddAfter("later", 30*time.Millisecond)
		q.AddAfter("sooner", 5*time.Millisecond)
		type got struct {
			key string
			at  time.Duration
		}
		out := make(chan got, 2)
		go func() {
			for {
				k, ok := q.Get()
				if !ok {
					close(out)
					return
				}
				out <- got{k, time.Since(start)}
				q.Done(k)
			}
		}()
		for _, want := range []got{{"sooner", 5 * time.Millisecond}, {"later", 30 * time.Millisecond}} {
			if g := <-out; g != want {
				t.Errorf("got %q at %v, want %q at %v", g.key, g.at, want.key, want.at)
			}
		}
		q.ShutDown()
		if g, ok := <-out; ok {
			t.Errorf("got %q at %v after every delayed key, want nothing", g.key, g.at)
		}
	})
}

// TestQueueAddAfterEarliestWins: of two pending AddAfter of one key the earlier
// time holds and the key comes out once; a zero or negative delay is an Add.
func TestQueueAddAfterEarliestWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, time.Second)
		defer q.ShutDown()
		q.AddAfter("a", 50*time.Millisecond)
		q.AddAfter("a", 20*time.Millisecond) // earlier: replaces 50ms
		q.AddAfter("b", 10*time.Millisecond)
		q.AddAfter("b", 40*time.Millisecond) // later: dropped
		q.AddAfter("now", 0)
		q.AddAfter("past", -time.Second)
		if got := getReady(q); !slices.Equal(got, []string{"now", "past"}) {
			t.Fatalf("ready at once: %v, want [now past]", got)
		}
		var timeline []string
		for _, step := range []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 10 * time.Millisecond, time.Hour} {
			advance(step)
			timeline = append(timeline, getReady(q)...)
			timeline = append(timeline, "|")
		}
		// At 10ms b, at 20ms a, and nothing at 40ms, 50ms or in the hour after.
		if want := []string{"b", "|", "a", "|", "|", "|", "|"}; !slices.Equal(timeline, want) {
			t.Fatalf("timeline %v, want %v", timeline, want)
		}
	})
}

// TestQueueShutDown: Get returns ok=false once the queue is shut down, and keys
// added or falling due afterwards are dropped.
func TestQueueShutDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, time.Second)
		q.AddAfter("delayed", time.Second)
		done := make(chan bool)
		go func() {
			_, ok := q.Get()
			done <- ok
		}()
		synctest.Wait() // the worker is blocked in Get
		q.ShutDown()
		if ok := <-done; ok {
			t.Fatal("Get after ShutDown returned a key")
		}
		q.Add("late")
		advance(time.Hour)
		if n := q.Len(); n != 0 {
			t.Fatalf("Len = %d after ShutDown, want 0", n)
		}
	})
}

type countingReconciler struct {
	mu       sync.Mutex
	inFlight map[string]int
	perKey   map[string]int
	began    []time.Time // when each call began
	overlap  atomic.Bool
	calls    atomic.Int64
	panicked atomic.Bool
	fail     func(key string, n int64) error
}

func (c *countingReconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	c.mu.Lock()
	c.inFlight[key]++
	c.perKey[key]++
	c.began = append(c.began, time.Now())
	if c.inFlight[key] > 1 {
		c.overlap.Store(true)
	}
	c.mu.Unlock()
	n := c.calls.Add(1)
	time.Sleep(time.Millisecond) // on the fake clock: lets the other workers run
	c.mu.Lock()
	c.inFlight[key]--
	c.mu.Unlock()
	if c.fail != nil {
		if err := c.fail(key, n); err != nil {
			return Result{}, err
		}
	}
	if key == "panic" && c.panicked.CompareAndSwap(false, true) {
		panic("boom")
	}
	return Result{}, nil
}

func newCountingReconciler() *countingReconciler {
	return &countingReconciler{inFlight: map[string]int{}, perKey: map[string]int{}}
}

// runController runs c until the test ends (in a bubble: until the function
// passed to synctest.Test returns, before the bubble waits for its goroutines).
func runController(t *testing.T, c *Controller) {
	t.Helper()
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestControllerNoConcurrentSameKeyAndPanicRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, 10*time.Millisecond)
		rec := newCountingReconciler()
		var panics atomic.Int64
		runController(t, &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 4,
			OnPanic: func(string, any) { panics.Add(1) }})
		for i := 0; i < 200; i++ {
			q.Add("same")
			q.Add("other")
		}
		q.Add("panic")
		advance(time.Minute) // far beyond every retry; the workers are idle again
		if rec.overlap.Load() {
			t.Fatal("a key was reconciled by two workers at once")
		}
		if n := panics.Load(); n != 1 {
			t.Fatalf("%d panics reported, want 1 (recovered, reported once)", n)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if n := rec.perKey["panic"]; n != 2 {
			t.Fatalf("the key that panicked was reconciled %d times, want 2 (the panic, then a retry)", n)
		}
	})
}

// TestControllerRetriesWithBackoffUntilSuccess: a failing key is retried after
// base·2^failures, at exactly those instants, until it succeeds, and then not again.
func TestControllerRetriesWithBackoffUntilSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, 10*time.Millisecond)
		start := time.Now()
		rec := newCountingReconciler()
		rec.fail = func(key string, n int64) error {
			if n < 4 {
				return errors.New("transient")
			}
			return nil
		}
		runController(t, &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 1})
		q.Add("k")
		advance(time.Minute)
		// Each call takes 1ms; the backoffs after the three failures are 1, 2, 4ms.
		want := []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var at []time.Duration
		for _, b := range rec.began {
			at = append(at, b.Sub(start))
		}
		if !slices.Equal(at, want) {
			t.Fatalf("calls began at %v, want %v (3 failures then a success, then no more)", at, want)
		}
		if q.Failures("k") != 0 {
			t.Fatalf("success must reset the backoff")
		}
	})
}

func TestControllerTerminalErrorNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewQueue(time.Millisecond, 10*time.Millisecond)
		rec := newCountingReconciler()
		rec.fail = func(string, int64) error { return Terminal(errors.New("bad spec")) }
		runController(t, &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 1})
		q.Add("k")
		advance(time.Hour)
		if n := rec.calls.Load(); n != 1 {
			t.Fatalf("calls = %d, want 1", n)
		}
	})
}

// requeueReconciler asks to be called again after each delay in turn, recording
// when each call came.
type requeueReconciler struct {
	start  time.Time
	delays []time.Duration
	err    error

	mu sync.Mutex
	at []time.Duration
}

func (r *requeueReconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at = append(r.at, time.Since(r.start))
	var res Result
	if n := len(r.at); n <= len(r.delays) {
		res.RequeueAfter = r.delays[n-1]
	}
	return res, r.err
}

// TestControllerRequeueAfter: Result.RequeueAfter brings the key back after
// exactly that long, after a success and after a terminal error (timers hold for
// an invalid object too).
func TestControllerRequeueAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{{"success", nil}, {"terminal", Terminal(errors.New("bad spec"))}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &requeueReconciler{start: time.Now(), delays: []time.Duration{30 * time.Second, 5 * time.Minute}, err: tc.err}
				q := NewQueue(time.Millisecond, time.Second)
				runController(t, &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 2})
				q.Add("k")
				advance(time.Hour)
				want := []time.Duration{0, 30 * time.Second, 30*time.Second + 5*time.Minute}
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if !slices.Equal(rec.at, want) {
					t.Fatalf("calls at %v, want %v", rec.at, want)
				}
			})
		})
	}
}
