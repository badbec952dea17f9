package netpolicy

import (
	"net/netip"
	"testing"
	"time"
)

// fired reports whether ch is closed.
func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// The reconciler sets every running sandbox's rules again on each resync:
// only a real change may move the generation (and wake the proxy).
func TestGenerationOnlyOnRealChange(t *testing.T) {
	rules := []Rule{
		{Policy: "ns/web", Domain: "api.example.com", Ports: []uint16{443, 80}},
		{Policy: "ns/web", CIDR: netip.MustParsePrefix("203.0.113.0/24")},
		{Policy: "ns/db", Group: GroupPrivate, Ports: []uint16{5432}},
	}
	e, _ := newTestEngine(t, EngineOptions{}, rules...)
	g := e.Generation("uid-1")
	if g == 0 {
		t.Fatal("a known sandbox has generation 0")
	}
	if e.Generation("nobody") != 0 {
		t.Fatal("an unknown sandbox has a generation")
	}
	set := func(rs ...Rule) {
		e.SetSandbox(Sandbox{ID: "uid-1", Namespace: "ns", Name: "sb", IP: sbIP, Rules: rs})
	}

	same := [][]Rule{
		rules,
		{rules[2], rules[0], rules[1]},           // another order
		{rules[1], rules[2], rules[0], rules[0]}, // a duplicate
		{{Policy: "ns/web", Domain: "API.Example.com.", Ports: []uint16{80, 443}}, rules[1], rules[2]}, // same rule, other spelling
		{rules[0], {Policy: "ns/web", CIDR: netip.MustParsePrefix("203.0.113.9/24")}, rules[2]},        // same prefix, unmasked
		append([]Rule{{Policy: "ns/bad", Group: "nonsense"}}, rules...),                                // an invalid rule matches nothing
	}
	for i, rs := range same {
		ch := e.RulesChanged()
		set(rs...)
		if got := e.Generation("uid-1"); got != g {
			t.Errorf("case %d: same rules moved the generation %d -> %d", i, g, got)
		}
		if fired(ch) {
			t.Errorf("case %d: same rules fired RulesChanged", i)
		}
	}

	changed := [][]Rule{
		rules[:2], // a rule removed
		{rules[0], rules[1], rules[2], {Policy: "ns/web", Domain: "new.example.com"}},             // one added
		{{Policy: "ns/web", Domain: "api.example.com", Ports: []uint16{443}}, rules[1], rules[2]}, // a port narrowed
		nil, // everything removed
		rules,
	}
	for i, rs := range changed {
		ch := e.RulesChanged()
		set(rs...)
		got := e.Generation("uid-1")
		if got == g || got == 0 {
			t.Errorf("case %d: changed rules left generation %d (now %d)", i, g, got)
		}
		if !fired(ch) {
			t.Errorf("case %d: changed rules did not fire RulesChanged", i)
		}
		g = got
	}

	// A new address is a change: the proxy recognises the sandbox by it.
	e.SetSandbox(Sandbox{ID: "uid-1", IP: otherIP, Rules: rules})
	if got := e.Generation("uid-1"); got == g {
		t.Error("a new address did not move the generation")
	} else {
		g = got
	}

	// Removal is a change; a sandbox set again under the same ID never
	// gets back a generation its earlier life had.
	ch := e.RulesChanged()
	e.RemoveSandbox("uid-1")
	if e.Generation("uid-1") != 0 || !fired(ch) {
		t.Fatal("RemoveSandbox: generation not 0 or RulesChanged not fired")
	}
	e.SetSandbox(Sandbox{ID: "uid-1", IP: otherIP, Rules: rules})
	if got := e.Generation("uid-1"); got == 0 || got == g {
		t.Errorf("set again after removal: generation %d (before removal %d)", got, g)
	}
}

// Taking over another sandbox's address changes what decides for the
// connections from that address: both generations move.
func TestGenerationAddressTakeover(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{}, Rule{Domain: "a.example"})
	e.SetSandbox(Sandbox{ID: "uid-2", IP: otherIP})
	g1, g2 := e.Generation("uid-1"), e.Generation("uid-2")
	e.SetSandbox(Sandbox{ID: "uid-2", IP: sbIP})
	if e.Generation("uid-1") == g1 || e.Generation("uid-2") == g2 {
		t.Fatal("address takeover did not move both generations")
	}
}

// Recheck is AllowConn under the current rules with the pin taken as of
// admission: a long-lived connection survives its pin's expiry while a
// domain rule still allows it, and nothing else.
func TestRecheck(t *testing.T) {
	rule := Rule{Policy: "ns/web", Domain: "api.example.com", Ports: []uint16{443}}
	e, clk := newTestEngine(t, EngineOptions{}, rule)
	dst := ap(pub, 443)
	e.Pin(sbIP, "api.example.com", pub, time.Second)
	d := e.AllowConn(sbIP, "api.example.com", dst)
	if !d.Allowed {
		t.Fatalf("admission: %+v", d)
	}
	admitted := d.Time
	clk.Add(time.Hour) // the pin (60s floor) is long gone

	if d := e.AllowConn(sbIP, "api.example.com", dst); d.Allowed {
		t.Fatal("AllowConn admitted on an expired pin")
	}
	// Unchanged rules (or others that still allow it): kept.
	e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP, Rules: []Rule{rule, {Policy: "ns/x", Domain: "other.example"}}})
	if d := e.Recheck(sbIP, "api.example.com", dst, admitted); !d.Allowed {
		t.Fatalf("Recheck refused a connection the rules still allow: %+v", d)
	}
	// The pin must have been alive at admission: one that expired
	// before does not count.
	if d := e.Recheck(sbIP, "api.example.com", dst, admitted.Add(30*time.Minute)); d.Allowed {
		t.Fatal("Recheck admitted on a pin that had expired before admission")
	}
	// A name never pinned to the address is not admitted.
	if d := e.Recheck(sbIP, "api.example.com", ap(pub2, 443), admitted); d.Allowed {
		t.Fatal("Recheck admitted an address never pinned to the name")
	}
	// Narrowed: the port is no longer allowed; removed: nothing is. The
	// old pin reopens nothing.
	e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP, Rules: []Rule{{Policy: "ns/web", Domain: "api.example.com", Ports: []uint16{8443}}}})
	if d := e.Recheck(sbIP, "api.example.com", dst, admitted); d.Allowed || d.Reason == "" {
		t.Fatalf("Recheck after narrowing: %+v", d)
	}
	e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP})
	if d := e.Recheck(sbIP, "api.example.com", dst, admitted); d.Allowed {
		t.Fatal("Recheck admitted with no rules")
	}
	e.RemoveSandbox("uid-1")
	if d := e.Recheck(sbIP, "api.example.com", dst, admitted); d.Allowed || d.Reason != reasonUnknownSource {
		t.Fatalf("Recheck after removal: %+v", d)
	}
}
