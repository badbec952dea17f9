// Package reconciler converges the world to the desired state in the store:
// a work queue of object keys, a loop of workers, and one controller per kind.
// It is level-triggered: a reconcile reads desired state from the store and
// actual state from the backends, and never trusts an event payload, so a
// restart of msbd loses nothing.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Result tells the loop when to look at a key again after a success.
type Result struct {
	// RequeueAfter > 0 reconciles the key again after that long (timers:
	// expiry, restart backoff).
	RequeueAfter time.Duration
}

// TerminalError marks a failure that retrying cannot fix (an invalid spec):
// the reconciler records it and waits for the object to change.
type TerminalError struct{ Err error }

func (e *TerminalError) Error() string { return e.Err.Error() }
func (e *TerminalError) Unwrap() error { return e.Err }

// Terminal wraps err so it is not retried.
func Terminal(err error) error { return &TerminalError{Err: err} }

// Reconciler makes one step toward convergence for key.
type Reconciler interface {
	Reconcile(ctx context.Context, key string) (Result, error)
}

// PanicHandler is told about a recovered panic, to record it on the object.
type PanicHandler func(key string, recovered any)

// Controller runs workers that take keys from a queue and reconcile them.
type Controller struct {
	Name       string
	Queue      *Queue
	Reconciler Reconciler
	Workers    int
	Log        *slog.Logger
	OnPanic    PanicHandler

	seq atomic.Uint64
}

// Run processes keys until ctx is done, then shuts the queue down and waits
// for the workers to finish their current key.
func (c *Controller) Run(ctx context.Context) {
	n := c.Workers
	if n <= 0 {
		n = 1
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.processNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.Queue.ShutDown()
	wg.Wait()
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, ok := c.Queue.Get()
	if !ok {
		return false
	}
	defer c.Queue.Done(key)
	id := c.seq.Add(1)
	log := c.Log.With("controller", c.Name, "key", key, "reconcileID", id)
	start := time.Now()
	res, err := c.safeReconcile(ctx, log, key)
	var term *TerminalError
	switch {
	case err == nil:
		c.Queue.Forget(key)
		if res.RequeueAfter > 0 {
			c.Queue.AddAfter(key, res.RequeueAfter)
		}
		log.Debug("reconciled", "took", time.Since(start), "requeueAfter", res.RequeueAfter)
	case errors.As(err, &term):
		c.Queue.Forget(key)
		// Timers still hold: an invalid sandbox still expires on time.
		if res.RequeueAfter > 0 {
			c.Queue.AddAfter(key, res.RequeueAfter)
		}
		log.Warn("reconcile failed; not retrying until the object changes", "err", err)
	default:
		if ctx.Err() != nil {
			return true
		}
		log.Warn("reconcile failed; will retry", "err", err, "failures", c.Queue.Failures(key)+1)
		c.Queue.AddRateLimited(key)
	}
	return true
}

// safeReconcile turns a panic in a reconcile into an error so one bad object
// cannot take the daemon down.
func (c *Controller) safeReconcile(ctx context.Context, log *slog.Logger, key string) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("reconcile panicked", "panic", r, "stack", string(debug.Stack()))
			if c.OnPanic != nil {
				c.OnPanic(key, r)
			}
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return c.Reconciler.Reconcile(ctx, key)
}
