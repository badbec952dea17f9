package reconciler

import (
	"container/heap"
	"sync"
	"time"
)

// Queue is a work queue of keys in the style of client-go's workqueue: a key
// waiting in the queue is held once however often it is added (events
// collapse), a key is never handed to two workers at once, and a key added
// while it is being processed is queued again when Done is called.
type Queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	queue      []string
	dirty      map[string]bool
	processing map[string]bool
	shutdown   bool

	// delayed holds keys added with AddAfter, earliest first.
	delayed  delayHeap
	waiting  map[string]time.Time // earliest pending ready time per key
	timer    *time.Timer
	failures map[string]int
	base     time.Duration
	max      time.Duration
}

// NewQueue returns a queue whose per-key failure backoff is base·2^failures,
// capped at max.
func NewQueue(base, max time.Duration) *Queue {
	q := &Queue{
		dirty:      map[string]bool{},
		processing: map[string]bool{},
		waiting:    map[string]time.Time{},
		failures:   map[string]int{},
		base:       base,
		max:        max,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key for processing now.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shutdown || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if q.processing[key] {
		return // Done re-queues it
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// AddAfter queues key once d has passed. An earlier pending AddAfter for the
// same key wins; a later one is dropped.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := time.Now().Add(d)
	if prev, ok := q.waiting[key]; ok && !prev.After(at) {
		return
	}
	q.waiting[key] = at
	heap.Push(&q.delayed, delayed{key: key, at: at})
	q.armLocked()
}

// armLocked points the timer at the earliest delayed key.
func (q *Queue) armLocked() {
	if len(q.delayed) == 0 {
		return
	}
	d := time.Until(q.delayed[0].at)
	if q.timer == nil {
		q.timer = time.AfterFunc(d, q.fire)
		return
	}
	q.timer.Reset(d)
}

// fire moves every delayed key whose time has come into the queue.
func (q *Queue) fire() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for len(q.delayed) > 0 && !q.delayed[0].at.After(now) {
		it := heap.Pop(&q.delayed).(delayed)
		if at, ok := q.waiting[it.key]; ok && at.Equal(it.at) {
			delete(q.waiting, it.key)
			q.addLocked(it.key)
		}
	}
	q.armLocked()
}

// AddRateLimited queues key after its backoff, and counts a failure.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	q.AddAfter(key, q.backoff(n))
}

func (q *Queue) backoff(failures int) time.Duration {
	d := q.base
	for i := 0; i < failures && d < q.max; i++ {
		d *= 2
	}
	if d > q.max {
		d = q.max
	}
	return d
}

// Failures is how many times key failed since its last Forget.
func (q *Queue) Failures(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Forget resets key's backoff after a success.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready and marks it processing. ok is false once
// the queue is shut down.
func (q *Queue) Get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.shutdown {
		return "", false
	}
	key = q.queue[0]
	q.queue = q.queue[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	return key, true
}

// Done marks key finished; if it was added meanwhile it is queued again.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] && !q.shutdown {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

// Len is the number of keys ready to be processed.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown wakes every Get with ok=false.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	if q.timer != nil {
		q.timer.Stop()
	}
	q.cond.Broadcast()
}

type delayed struct {
	key string
	at  time.Time
}

type delayHeap []delayed

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayed)) }
func (h *delayHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
