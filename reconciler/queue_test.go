package reconciler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

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
}

func TestQueueAddAfterDelivers(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	defer q.ShutDown()
	q.AddAfter("later", 30*time.Millisecond)
	q.AddAfter("sooner", 5*time.Millisecond)
	got := make(chan string, 2)
	go func() {
		for i := 0; i < 2; i++ {
			k, ok := q.Get()
			if !ok {
				return
			}
			got <- k
			q.Done(k)
		}
	}()
	for _, want := range []string{"sooner", "later"} {
		select {
		case k := <-got:
			if k != want {
				t.Fatalf("got %q, want %q", k, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for %q", want)
		}
	}
}

type countingReconciler struct {
	mu       sync.Mutex
	inFlight map[string]int
	overlap  atomic.Bool
	calls    atomic.Int64
	panicked atomic.Bool
	fail     func(key string, n int64) error
}

func (c *countingReconciler) Reconcile(ctx context.Context, key string) (Result, error) {
	c.mu.Lock()
	c.inFlight[key]++
	if c.inFlight[key] > 1 {
		c.overlap.Store(true)
	}
	c.mu.Unlock()
	n := c.calls.Add(1)
	time.Sleep(time.Millisecond)
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

func TestControllerNoConcurrentSameKeyAndPanicRecovered(t *testing.T) {
	q := NewQueue(time.Millisecond, 10*time.Millisecond)
	rec := &countingReconciler{inFlight: map[string]int{}}
	var panics atomic.Int64
	c := &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 4,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), OnPanic: func(string, any) { panics.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	for i := 0; i < 200; i++ {
		q.Add("same")
		q.Add("other")
	}
	q.Add("panic")
	deadline := time.Now().Add(5 * time.Second)
	for panics.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if rec.overlap.Load() {
		t.Fatal("a key was reconciled by two workers at once")
	}
	if panics.Load() < 1 {
		t.Fatal("panic was not recovered and reported")
	}
}

func TestControllerRetriesWithBackoffUntilSuccess(t *testing.T) {
	q := NewQueue(time.Millisecond, 10*time.Millisecond)
	rec := &countingReconciler{inFlight: map[string]int{}, fail: func(key string, n int64) error {
		if n < 4 {
			return errors.New("transient")
		}
		return nil
	}}
	c := &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 1, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	q.Add("k")
	deadline := time.Now().Add(5 * time.Second)
	for rec.calls.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	if rec.calls.Load() != 4 {
		t.Fatalf("calls = %d, want 4 (3 failures then a success, then no more)", rec.calls.Load())
	}
	if q.Failures("k") != 0 {
		t.Fatalf("success must reset the backoff")
	}
}

func TestControllerTerminalErrorNotRetried(t *testing.T) {
	q := NewQueue(time.Millisecond, 10*time.Millisecond)
	rec := &countingReconciler{inFlight: map[string]int{}, fail: func(string, int64) error { return Terminal(errors.New("bad spec")) }}
	c := &Controller{Name: "t", Queue: q, Reconciler: rec, Workers: 1, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	q.Add("k")
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	if rec.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", rec.calls.Load())
	}
}
