package client

import "sync"

// credit counts the stdin bytes a sender may still send.
type credit struct {
	mu    sync.Mutex
	avail int
	wake  chan struct{}
}

func newCredit() *credit { return &credit{wake: make(chan struct{}, 1)} }

// grant adds n bytes.
func (c *credit) grant(n int) {
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take reserves up to max bytes, waiting for a grant; 0 once done is closed.
func (c *credit) take(max int, done <-chan struct{}) int {
	for {
		c.mu.Lock()
		if c.avail > 0 {
			n := min(c.avail, max)
			c.avail -= n
			c.mu.Unlock()
			return n
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-done:
			return 0
		}
	}
}
