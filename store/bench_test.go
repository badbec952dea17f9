package store

import (
	"fmt"
	"testing"
)

// Each write is one bbolt transaction with an fsync; these measure that cost.
func BenchmarkCreate(b *testing.B) {
	s, _ := newStore(b)
	i := 0
	for b.Loop() {
		if err := s.Create(sandbox("", fmt.Sprint("sb", i), "alpine")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	s, _ := newStore(b)
	sb := sandbox("", "sb", "alpine")
	if err := s.Create(sb); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		sb.Spec.Resources.PIDs++
		if err := s.Update(sb); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s, _ := newStore(b)
	if err := s.Create(sandbox("", "sb", "alpine")); err != nil {
		b.Fatal(err)
	}
	var into = sandbox("", "", "")
	for b.Loop() {
		if err := s.Get("Sandbox", "", "sb", into); err != nil {
			b.Fatal(err)
		}
	}
}
