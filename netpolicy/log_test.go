package netpolicy

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func TestDecisionLogRing(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{LogSize: 3})
	if got := e.Decisions("uid-1"); len(got) != 0 {
		t.Fatalf("fresh log has %d entries", len(got))
	}
	for i := range 5 {
		e.Record(Decision{Sandbox: "uid-1", Kind: KindDNS, Name: "n" + strconv.Itoa(i)})
	}
	e.Record(Decision{Sandbox: "nobody", Name: "dropped"})
	got := e.Decisions("uid-1")
	if len(got) != 3 || got[0].Name != "n2" || got[2].Name != "n4" {
		t.Fatalf("log = %+v, want n2..n4 oldest first", got)
	}
	if got[0].Time.IsZero() {
		t.Error("Record did not stamp the time")
	}
	if e.Decisions("nobody") != nil {
		t.Error("decisions for an unknown sandbox")
	}
}

func TestFollow(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{})
	e.Record(Decision{Sandbox: "uid-1", Name: "before"})
	ctx, cancel := context.WithCancel(t.Context())
	ch := e.Follow(ctx, "uid-1")
	// A follower that never reads: deciders must not block on it.
	stalled := e.Follow(t.Context(), "uid-1")
	for i := range followBuffer + 10 {
		e.Record(Decision{Sandbox: "uid-1", Name: "n" + strconv.Itoa(i)})
	}
	if d := <-ch; d.Name != "n0" {
		t.Errorf("first followed decision %q, want n0", d.Name)
	}
	cancel()
	n := 1
	for range ch { // drains, then closes
		n++
	}
	if n != followBuffer {
		t.Errorf("follower got %d decisions, want the %d that fit", n, followBuffer)
	}
	e.RemoveSandbox("uid-1")
	for range stalled {
	}
	if _, ok := <-e.Follow(t.Context(), "uid-1"); ok {
		t.Error("following a removed sandbox yields decisions")
	}
}

func TestOnDenyRateLimited(t *testing.T) {
	type call struct {
		name       string
		suppressed int
	}
	var calls []call
	var all int
	e, clk := newTestEngine(t, EngineOptions{
		DenyInterval: time.Minute,
		OnDecision:   func(Decision) { all++ },
		OnDeny:       func(_ Sandbox, d Decision, n int) { calls = append(calls, call{d.Name, n}) },
	})
	deny := func(name string) {
		e.Record(Decision{Sandbox: "uid-1", Name: name, Reason: "no policy allows this name"})
	}
	deny("a.example")
	deny("a.example")
	deny("a.example")
	deny("b.example")
	e.Record(Decision{Sandbox: "uid-1", Name: "ok.example", Allowed: true})
	clk.Add(61 * time.Second)
	deny("a.example")
	want := []call{{"a.example", 0}, {"b.example", 0}, {"a.example", 2}}
	if len(calls) != len(want) {
		t.Fatalf("OnDeny calls %+v, want %+v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, calls[i], want[i])
		}
	}
	if all != 6 {
		t.Errorf("OnDecision saw %d, want 6", all)
	}
	// Endless made-up names stop producing reports at maxDenyKeys.
	calls = nil
	for i := range 2 * maxDenyKeys {
		deny("x" + strconv.Itoa(i) + ".example")
	}
	if len(calls) > maxDenyKeys {
		t.Errorf("%d reports for made-up names, want at most %d", len(calls), maxDenyKeys)
	}
}
