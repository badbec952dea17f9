package netpolicy

import "sync"

// Slots bounds what each sandbox holds at once (DNS queries in flight,
// proxied connections), so one sandbox cannot take what the others need.
type Slots struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

// NewSlots allows max per sandbox.
func NewSlots(max int) *Slots { return &Slots{max: max, n: map[string]int{}} }

// Acquire takes one of id's slots; false when it holds max already.
func (s *Slots) Acquire(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[id] >= s.max {
		return false
	}
	s.n[id]++
	return true
}

// Release gives back a slot Acquire took.
func (s *Slots) Release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[id]--; s.n[id] <= 0 {
		delete(s.n, id)
	}
}
