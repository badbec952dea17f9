package netpolicy

import (
	"net/netip"
	"testing"
	"time"
)

func TestEnginePinned(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEngine(EngineOptions{Now: func() time.Time { return now }})
	src := netip.MustParseAddr("172.29.0.2")
	e.SetSandbox(Sandbox{ID: "a", IP: src, Rules: []Rule{{Domain: "api.test"}}})
	addr := netip.MustParseAddr("203.0.113.20")
	if e.Pinned(src, "api.test", addr) {
		t.Fatal("pinned before any answer")
	}
	e.Pin(src, "API.test.", addr, time.Second)
	if !e.Pinned(src, "api.test", addr) || e.Pinned(src, "api.test", netip.MustParseAddr("203.0.113.21")) || e.Pinned(netip.MustParseAddr("172.29.0.6"), "api.test", addr) {
		t.Fatal("Pinned does not answer for exactly the pinned sandbox, name and address")
	}
	now = now.Add(2 * time.Hour)
	if e.Pinned(src, "api.test", addr) {
		t.Error("a pin outlived its TTL and floor")
	}
}
