package netpolicy

import (
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	sbIP    = netip.MustParseAddr("10.200.0.2")
	otherIP = netip.MustParseAddr("10.200.0.6")
	pub     = netip.MustParseAddr("203.0.113.10")
	pub2    = netip.MustParseAddr("198.51.100.7")
	priv    = netip.MustParseAddr("10.1.2.3")
	meta    = netip.MustParseAddr("169.254.169.254")
	hostA   = netip.MustParseAddr("192.0.2.50") // public by range, but msbd's own
)

// fakeClock is a settable clock for pin expiry and the deny limiter.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestEngine(t *testing.T, opts EngineOptions, rules ...Rule) (*Engine, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts.Now = clk.Now
	e := NewEngine(opts)
	e.SetSandbox(Sandbox{ID: "uid-1", Namespace: "ns", Name: "sb", IP: sbIP, Rules: rules})
	return e, clk
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func TestAllowName(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{},
		Rule{Policy: "ns/web", Domain: "api.example.com", Ports: []uint16{443}},
		Rule{Policy: "ns/web", Domain: "*.cdn.example"},
	)
	for _, tc := range []struct {
		name string
		port uint16
		want bool
	}{
		{"api.example.com", 0, true},
		{"API.Example.COM.", 443, true},
		{"api.example.com", 80, false},
		{"example.com", 0, false},
		{"x.api.example.com", 0, false},
		{"a.cdn.example", 8080, true},
		{"a.b.cdn.example", 0, true},
		{"cdn.example", 0, false}, // the wildcard is strictly below
		{"xcdn.example", 0, false},
		{"", 0, false},
	} {
		d := e.AllowName(sbIP, tc.name, tc.port)
		if d.Allowed != tc.want {
			t.Errorf("AllowName(%q, %d) = %+v, want allowed=%v", tc.name, tc.port, d, tc.want)
		}
		if d.Sandbox != "uid-1" || (d.Allowed && d.Rule == "") || (!d.Allowed && d.Reason == "") {
			t.Errorf("AllowName(%q, %d): incomplete decision %+v", tc.name, tc.port, d)
		}
	}
	if d := e.AllowName(otherIP, "api.example.com", 0); d.Allowed || d.Reason != reasonUnknownSource {
		t.Errorf("unknown source: %+v", d)
	}
	if d := e.AllowName(sbIP, "api.example.com", 443); d.Rule != "ns/web: domain api.example.com ports 443" {
		t.Errorf("rule description %q", d.Rule)
	}
}

func TestAllowConn(t *testing.T) {
	e, clk := newTestEngine(t, EngineOptions{PinFloor: time.Minute},
		Rule{Policy: "ns/a", Domain: "api.example.com", Ports: []uint16{443}},
		Rule{Policy: "ns/a", Domain: "internal.example"},
		Rule{Policy: "ns/b", CIDR: netip.MustParsePrefix("198.51.100.0/24"), Ports: []uint16{22}},
	)
	e.SetHostAddrs([]netip.Addr{hostA})
	e.Pin(sbIP, "API.example.com.", pub, 10*time.Second)
	e.Pin(sbIP, "internal.example", priv, time.Hour) // left over: no IP rule covers it
	e.Pin(sbIP, "api.example.com", hostA, time.Hour)
	for _, tc := range []struct {
		desc string
		name string
		dst  netip.AddrPort
		want bool
	}{
		{"pinned name", "api.example.com", ap(pub, 443), true},
		{"wrong port", "api.example.com", ap(pub, 80), false},
		{"not pinned", "api.example.com", ap(pub2, 443), false},
		{"other name", "evil.example", ap(pub, 443), false},
		{"no name, no IP rule", "", ap(pub, 443), false},
		{"IP rule", "", ap(pub2, 22), true},
		{"IP rule, any name", "evil.example", ap(pub2, 22), true},
		{"IP rule, wrong port", "", ap(pub2, 23), false},
		{"pinned private without IP rule", "internal.example", ap(priv, 443), false},
		{"pinned host address", "api.example.com", ap(hostA, 443), false},
		{"loopback never", "api.example.com", ap(netip.MustParseAddr("127.0.0.1"), 443), false},
	} {
		d := e.AllowConn(sbIP, tc.name, tc.dst)
		if d.Allowed != tc.want {
			t.Errorf("%s: AllowConn(%q, %s) = %+v, want allowed=%v", tc.desc, tc.name, tc.dst, d, tc.want)
		}
		if !d.Allowed && d.Reason == "" {
			t.Errorf("%s: denial without reason", tc.desc)
		}
	}
	// The pin lasts max(ttl, floor): 10s ttl, 1m floor.
	clk.Add(59 * time.Second)
	if d := e.AllowConn(sbIP, "api.example.com", ap(pub, 443)); !d.Allowed {
		t.Errorf("pin expired before the floor: %+v", d)
	}
	clk.Add(2 * time.Second)
	if d := e.AllowConn(sbIP, "api.example.com", ap(pub, 443)); d.Allowed || d.Reason != "address not pinned to name" {
		t.Errorf("pin outlived the floor: %+v", d)
	}
}

func TestGroups(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{})
	e.SetHostAddrs([]netip.Addr{hostA, netip.MustParseAddr("10.9.9.9")})
	set := func(rules ...Rule) { e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP, Rules: rules}) }
	for _, tc := range []struct {
		desc string
		rule Rule
		addr string
		want bool
	}{
		{"public admits public", Rule{Group: GroupPublic}, "203.0.113.10", true},
		{"public refuses private", Rule{Group: GroupPublic}, "10.1.2.3", false},
		{"public refuses host", Rule{Group: GroupPublic}, "192.0.2.50", false},
		{"public refuses metadata", Rule{Group: GroupPublic}, "169.254.169.254", false},
		{"private admits 100.64/10", Rule{Group: GroupPrivate}, "100.64.1.1", true},
		{"private refuses metadata v6", Rule{Group: GroupPrivate}, "fd00:ec2::254", false},
		{"private refuses host", Rule{Group: GroupPrivate}, "10.9.9.9", false},
		{"link-local refuses metadata", Rule{Group: GroupLinkLocal}, "169.254.169.254", false},
		{"link-local admits", Rule{Group: GroupLinkLocal}, "169.254.1.1", true},
		{"metadata admits", Rule{Group: GroupMetadata}, "169.254.169.254", true},
		{"host admits host", Rule{Group: GroupHost}, "10.9.9.9", true},
		{"host refuses others", Rule{Group: GroupHost}, "10.9.9.8", false},
		{"wide CIDR refuses metadata", Rule{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, "169.254.169.254", false},
		{"wide CIDR refuses host", Rule{CIDR: netip.MustParsePrefix("10.0.0.0/8")}, "10.9.9.9", false},
		{"exact CIDR admits metadata", Rule{CIDR: netip.MustParsePrefix("169.254.169.254/32")}, "169.254.169.254", true},
		{"wide CIDR admits private", Rule{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, "10.1.2.3", true},
		{"mapped CIDR", Rule{CIDR: netip.MustParsePrefix("::ffff:10.0.0.0/104")}, "10.1.2.3", true},
		{"unknown group matches nothing", Rule{Group: "internet"}, "203.0.113.10", false},
	} {
		set(tc.rule)
		a := netip.MustParseAddr(tc.addr)
		if got := e.IPRuleCovers(sbIP, a); got != tc.want {
			t.Errorf("%s: IPRuleCovers(%s) = %v", tc.desc, a, got)
		}
		if got := e.AllowConn(sbIP, "", ap(a, 443)).Allowed; got != tc.want {
			t.Errorf("%s: AllowConn(%s) = %v", tc.desc, a, got)
		}
	}
}

func TestSetSandboxReplacesRules(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{}, Rule{Domain: "a.example"})
	e.Pin(sbIP, "a.example", pub, time.Minute)
	if !e.AllowConn(sbIP, "a.example", ap(pub, 443)).Allowed {
		t.Fatal("not allowed before the change")
	}
	rules := []Rule{{Domain: "b.example"}}
	e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP, Rules: rules})
	rules[0].Domain = "a.example" // the caller's slice is not the Engine's
	if d := e.AllowConn(sbIP, "a.example", ap(pub, 443)); d.Allowed {
		t.Errorf("old rule still applies: %+v", d)
	}
	// The sandbox moves to another address; the old one is forgotten.
	e.SetSandbox(Sandbox{ID: "uid-1", IP: otherIP, Rules: []Rule{{Domain: "a.example"}}})
	if _, ok := e.Sandbox(sbIP); ok {
		t.Error("old address still maps to the sandbox")
	}
	if d := e.AllowConn(otherIP, "a.example", ap(pub, 443)); !d.Allowed {
		t.Errorf("pins lost across SetSandbox: %+v", d)
	}
	// Another sandbox takes the address over.
	e.SetSandbox(Sandbox{ID: "uid-2", IP: otherIP})
	if sb, _ := e.Sandbox(otherIP); sb.ID != "uid-2" {
		t.Errorf("address owner %q", sb.ID)
	}
	e.RemoveSandbox("uid-1") // must not drop uid-2's address
	if sb, ok := e.Sandbox(otherIP); !ok || sb.ID != "uid-2" {
		t.Errorf("RemoveSandbox dropped another sandbox's address")
	}
	e.RemoveSandbox("uid-2")
	if _, ok := e.Sandbox(otherIP); ok {
		t.Error("removed sandbox still known")
	}
}

func TestPinTableBounded(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{MaxPinNames: 8}, Rule{Domain: "*.example"})
	for i := range 100 {
		e.Pin(sbIP, "n"+strconv.Itoa(i)+".example", pub, time.Hour)
	}
	st, _ := e.lookup(sbIP)
	if n := st.pins.len(); n != 8 {
		t.Errorf("%d names pinned, want 8", n)
	}
	if e.AllowConn(sbIP, "n0.example", ap(pub, 443)).Allowed {
		t.Error("oldest pin not evicted")
	}
	if !e.AllowConn(sbIP, "n99.example", ap(pub, 443)).Allowed {
		t.Error("newest pin evicted")
	}
	for i := range 100 { // addresses per name are bounded too
		e.Pin(sbIP, "many.example", netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), time.Hour)
	}
	st.pins.mu.RLock()
	n := len(st.pins.names["many.example"].Value.(*pinName).addrs)
	st.pins.mu.RUnlock()
	if n != maxAddrsPerName {
		t.Errorf("%d addresses pinned to one name", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	e, _ := newTestEngine(t, EngineOptions{LogSize: 16}, Rule{Domain: "*.example"}, Rule{Group: GroupPublic})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				name := "n" + strconv.Itoa(i%50) + ".example"
				e.Pin(sbIP, name, pub, time.Minute)
				e.Record(e.AllowConn(sbIP, name, ap(pub, 443)))
				e.IPRuleCovers(sbIP, priv)
				if w == 0 && i%100 == 0 {
					e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP, Rules: []Rule{{Domain: "*.example"}}})
					e.SetHostAddrs([]netip.Addr{hostA})
				}
			}
		})
	}
	wg.Wait()
	if n := len(e.Decisions("uid-1")); n != 16 {
		t.Errorf("%d decisions kept, want 16", n)
	}
}

func BenchmarkAllowConn(b *testing.B) {
	e := NewEngine(EngineOptions{})
	var rules []Rule
	for i := range 50 {
		rules = append(rules, Rule{Policy: "ns/p", Domain: "svc" + strconv.Itoa(i) + ".example.com", Ports: []uint16{443}})
	}
	rules = append(rules, Rule{Policy: "ns/p", Domain: "*.cdn.example"}, Rule{Policy: "ns/p", Group: GroupPrivate, Ports: []uint16{5432}})
	for i := range 100 {
		e.SetSandbox(Sandbox{ID: "uid-" + strconv.Itoa(i), IP: netip.AddrFrom4([4]byte{10, 200, byte(i), 2}), Rules: rules})
	}
	src := netip.AddrFrom4([4]byte{10, 200, 42, 2})
	e.Pin(src, "svc7.example.com", pub, time.Hour)
	e.Pin(src, "a.b.cdn.example", pub2, time.Hour)
	b.Run("pinned-name", func(b *testing.B) {
		for b.Loop() {
			if !e.AllowConn(src, "svc7.example.com", ap(pub, 443)).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("wildcard", func(b *testing.B) {
		for b.Loop() {
			if !e.AllowConn(src, "a.b.cdn.example", ap(pub2, 443)).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("ip-rule", func(b *testing.B) {
		for b.Loop() {
			if !e.AllowConn(src, "", ap(priv, 5432)).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("denied", func(b *testing.B) {
		for b.Loop() {
			if e.AllowConn(src, "evil.example", ap(pub, 443)).Allowed {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.AllowConn(src, "svc7.example.com", ap(pub, 443))
			}
		})
	})
}

func BenchmarkRecord(b *testing.B) {
	e := NewEngine(EngineOptions{OnDeny: func(Sandbox, Decision, int) {}})
	e.SetSandbox(Sandbox{ID: "uid-1", IP: sbIP})
	d := e.AllowName(sbIP, "evil.example", 0)
	for b.Loop() {
		e.Record(d)
	}
}
