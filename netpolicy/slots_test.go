package netpolicy

import "testing"

func TestSlots(t *testing.T) {
	s := NewSlots(2)
	if !s.Acquire("a") || !s.Acquire("a") || s.Acquire("a") {
		t.Fatal("a sandbox got more or fewer than 2 slots")
	}
	if !s.Acquire("b") {
		t.Fatal("one sandbox's slots limit another's")
	}
	s.Release("a")
	if !s.Acquire("a") {
		t.Fatal("a released slot is not given again")
	}
	s.Release("a")
	s.Release("a")
	s.Release("b")
	if len(s.n) != 0 {
		t.Errorf("counts left for idle sandboxes: %v", s.n)
	}
}
