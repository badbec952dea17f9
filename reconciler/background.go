package reconciler

import (
	"context"
	"errors"
	"time"
)

// Work that can outlast a reconcile — an image pull, a stop's grace period —
// runs in the background so it never holds one of the few reconcile workers:
// a slow registry or a sandbox ignoring SIGTERM must not stall every other
// sandbox. A reconcile waits a little (inlineWait: enough for a cache hit or
// a prompt exit) and otherwise returns; the work requeues the sandbox when it
// ends, and the next reconcile takes its result.

// inlineWait is how long a reconcile waits for background work before it
// gives the worker back.
const inlineWait = 100 * time.Millisecond

var (
	// errPulling: the image is still being pulled; the pull requeues.
	errPulling = errors.New("image pull in progress")
	// errStopping: the sandbox is still stopping; the stop requeues.
	errStopping = errors.New("sandbox stop in progress")
)

// inProgress reports whether err only says that background work goes on.
func inProgress(err error) bool {
	return errors.Is(err, errPulling) || errors.Is(err, errStopping)
}

// bgOp is one piece of background work for one sandbox. Its fields after
// cancel are guarded by the reconciler's mu.
type bgOp struct {
	tag    string // what it does; work with another tag replaces it
	cancel context.CancelFunc
	done   chan struct{} // closed when finished is set

	waiters    int  // reconciles waiting for it right now
	finished   bool // val, err and finishedAt are set
	finishedAt time.Time
	val        any
	err        error
}

// staleAfter: a result nobody collected this long after the work ended
// (its requeue found the sandbox needing something else) is not reused;
// the next call starts the work afresh.
const staleAfter = 10 * time.Second

// background runs fn in slot (e.g. "pull/<uid>") unless work with the same
// tag already runs there, which it then joins (work with another tag is
// cancelled and replaced). It waits up to inlineWait or ctx; finished says
// whether the work ended, with its result. Work that ends while no
// reconcile waits for it requeues key. onStart, if not nil, is called when
// the work starts (not when it is joined).
func (r *SandboxReconciler) background(ctx context.Context, slot, tag, key string, fn func(context.Context) (any, error), onStart func()) (val any, err error, finished bool) {
	r.mu.Lock()
	op := r.ops[slot]
	if op != nil && (op.tag != tag || op.finished && time.Since(op.finishedAt) > staleAfter) {
		op.cancel()
		op = nil
	}
	started := false
	if op == nil {
		started = true
		bctx, cancel := context.WithCancel(context.Background())
		op = &bgOp{tag: tag, cancel: cancel, done: make(chan struct{})}
		r.ops[slot] = op
		go func() {
			v, e := fn(bctx)
			r.mu.Lock()
			op.val, op.err, op.finished, op.finishedAt = v, e, true, time.Now()
			close(op.done)
			requeue := r.ops[slot] == op && op.waiters == 0
			r.mu.Unlock()
			if requeue && r.Requeue != nil {
				r.Requeue(key)
			}
		}()
	}
	op.waiters++
	r.mu.Unlock()
	if started && onStart != nil {
		onStart()
	}

	timer := time.NewTimer(inlineWait)
	select {
	case <-op.done:
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	r.mu.Lock()
	op.waiters--
	finished = op.finished
	if finished && r.ops[slot] == op {
		delete(r.ops, slot)
	}
	r.mu.Unlock()
	if !finished {
		return nil, ctx.Err(), false
	}
	return op.val, op.err, true
}

// dropBackground cancels and forgets the work in slot.
func (r *SandboxReconciler) dropBackground(slot string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if op := r.ops[slot]; op != nil {
		op.cancel()
		delete(r.ops, slot)
	}
}
