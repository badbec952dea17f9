package dnsfilter

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"msb.dev/msb/netpolicy"
)

func TestFilter(t *testing.T) {
	up := startUpstream(t)
	e := testEngine()
	server := startFilter(t, New(Options{Decider: e, Upstreams: []string{up.addr}, Timeout: 300 * time.Millisecond}))

	for _, tc := range []struct {
		name    string
		qtype   uint16
		src     netip.Addr
		network string
		rcode   int
		addrs   []string
		ede     uint16 // 0: none expected
		edeText string
	}{
		{"allowed.example", dns.TypeA, srcDomains, "udp", dns.RcodeSuccess, []string{"203.0.113.10"}, 0, ""},
		{"ALLOWED.example", dns.TypeA, srcDomains, "tcp", dns.RcodeSuccess, []string{"203.0.113.10"}, 0, ""},
		{"cname.example", dns.TypeA, srcDomains, "udp", dns.RcodeSuccess, []string{"203.0.113.10"}, 0, ""},
		{"rebind.example", dns.TypeA, srcDomains, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "rebinding"},
		{"meta.example", dns.TypeA, srcDomains, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "rebinding"},
		{"mixed.example", dns.TypeA, srcDomains, "udp", dns.RcodeSuccess, []string{"203.0.113.11"}, 0, ""},
		{"blocked.example", dns.TypeA, srcDomains, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "denied by policy"},
		{"blocked.example", dns.TypeTXT, srcDomains, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "denied by policy"},
		{"nx.example", dns.TypeA, srcDomains, "udp", dns.RcodeNameError, nil, 0, ""},
		{"tc.example", dns.TypeA, srcDomains, "udp", dns.RcodeSuccess, []string{"203.0.113.20"}, 0, ""},
		{"slow.example", dns.TypeA, srcDomains, "udp", dns.RcodeServerFailure, nil, dns.ExtendedErrorCodeNoReachableAuthority, ""},
		{"allowed.example", dns.TypeAAAA, srcDomains, "udp", dns.RcodeSuccess, nil, 0, ""},
		{"allowed.example", dns.TypeANY, srcDomains, "udp", dns.RcodeNotImplemented, nil, 0, ""},
		{"allowed.example", dns.TypeAXFR, srcDomains, "tcp", dns.RcodeRefused, nil, 0, ""},
		{"allowed.example", dns.TypeA, srcUnknown, "udp", dns.RcodeRefused, nil, 0, ""},
		{"covered.example", dns.TypeA, srcIPOnly, "udp", dns.RcodeSuccess, []string{"198.51.100.5"}, 0, ""},
		{"partly.example", dns.TypeA, srcIPOnly, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "denied by policy"},
		{"allowed.example", dns.TypeA, srcIPOnly, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "denied by policy"},
		{"allowed.example", dns.TypeA, srcNoRules, "udp", dns.RcodeNameError, nil, dns.ExtendedErrorCodeBlocked, "denied by policy"},
	} {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype]+"/"+tc.src.String()+"/"+tc.network, func(t *testing.T) {
			r := query(t, server, tc.src, tc.network, tc.name, tc.qtype, false)
			if r.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode], r)
			}
			if got := addrsOf(r); !slices.Equal(got, tc.addrs) {
				t.Errorf("addresses %v, want %v", got, tc.addrs)
			}
			for _, rr := range r.Answer {
				if rr.Header().Rrtype == dns.TypeAAAA {
					t.Errorf("AAAA handed out: %v", rr)
				}
			}
			ede := edeOf(r)
			switch {
			case tc.ede == 0 && ede != nil:
				t.Errorf("unexpected EDE %v", ede)
			case tc.ede != 0 && ede == nil:
				t.Errorf("no EDE, want %d", tc.ede)
			case tc.ede != 0 && (ede.InfoCode != tc.ede || !strings.Contains(ede.ExtraText, tc.edeText)):
				t.Errorf("EDE %d %q, want %d containing %q", ede.InfoCode, ede.ExtraText, tc.ede, tc.edeText)
			}
		})
	}

	t.Run("pins", func(t *testing.T) {
		for _, c := range []struct {
			name string
			dst  string
			want bool
		}{
			{"allowed.example", "203.0.113.10", true},
			{"cname.example", "203.0.113.10", true}, // pinned to the name asked
			{"cname.example", "203.0.113.99", false},
			{"mixed.example", "203.0.113.11", true},
			{"mixed.example", "10.1.2.4", false},
			{"tc.example", "203.0.113.20", true},
		} {
			d := e.AllowConn(srcDomains, c.name, netip.AddrPortFrom(netip.MustParseAddr(c.dst), 443))
			if d.Allowed != c.want {
				t.Errorf("AllowConn(%s -> %s) = %+v, want allowed=%v", c.name, c.dst, d, c.want)
			}
		}
	})

	t.Run("decisions", func(t *testing.T) {
		var allowed, denied int
		for _, d := range e.Decisions("domains") {
			if d.Kind != netpolicy.KindDNS || d.Sandbox != "domains" {
				t.Errorf("bad decision %+v", d)
			}
			if d.Allowed {
				allowed++
			} else {
				denied++
				if d.Reason == "" {
					t.Errorf("denial without a reason: %+v", d)
				}
			}
		}
		if allowed == 0 || denied == 0 {
			t.Errorf("%d allowed, %d denied decisions logged", allowed, denied)
		}
	})

	t.Run("no upstream query for a sandbox without IP rules", func(t *testing.T) {
		query(t, server, srcNoRules, "udp", "secret-data.blocked.example", dns.TypeA, false)
		if n := up.count("secret-data.blocked.example"); n != 0 {
			t.Errorf("name leaked upstream %d times", n)
		}
	})

	t.Run("no EDNS, no EDE", func(t *testing.T) {
		r := query(t, server, srcDomains, "udp", "blocked.example", dns.TypeA, true)
		if r.Rcode != dns.RcodeNameError || r.IsEdns0() != nil {
			t.Errorf("got %v", r)
		}
	})

	t.Run("other types drop addresses", func(t *testing.T) {
		r := query(t, server, srcDomains, "udp", "txt.example", dns.TypeTXT, false)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("got %v", r)
		}
		for _, rr := range r.Extra {
			if rr.Header().Rrtype == dns.TypeA {
				t.Errorf("additional A passed through: %v", rr)
			}
		}
		r = query(t, server, srcDomains, "udp", "https.example", dns.TypeHTTPS, false)
		if len(r.Answer) != 1 || strings.Contains(r.Answer[0].String(), "ipv4hint") {
			t.Errorf("HTTPS answer %v", r.Answer)
		}
	})

	t.Run("cache", func(t *testing.T) {
		before := up.count("allowed.example")
		for range 3 {
			query(t, server, srcDomains, "udp", "allowed.example", dns.TypeA, false)
		}
		if n := up.count("allowed.example") - before; n != 0 {
			t.Errorf("%d upstream queries for a cached name", n)
		}
		query(t, server, srcDomains, "udp", "zero.example", dns.TypeA, false)
		query(t, server, srcDomains, "udp", "zero.example", dns.TypeA, false)
		if n := up.count("zero.example"); n != 2 {
			t.Errorf("TTL 0 answer cached (%d upstream queries)", n)
		}
	})
}

// TestPolicyChangeApplies checks that a rule removed takes effect on the
// next query, the cache notwithstanding.
func TestPolicyChangeApplies(t *testing.T) {
	up := startUpstream(t)
	e := testEngine()
	server := startFilter(t, New(Options{Decider: e, Upstreams: []string{up.addr}}))
	if r := query(t, server, srcDomains, "udp", "allowed.example", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("got %v", r)
	}
	e.SetSandbox(netpolicy.Sandbox{ID: "domains", IP: srcDomains})
	if r := query(t, server, srcDomains, "udp", "allowed.example", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Errorf("removed rule still answers: %v", r)
	}
}

// TestNoGoroutineLeak runs queries of every kind, including ones the
// upstream never answers, shuts down, and checks every goroutine the
// filter started has ended.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		up := startUpstream(t)
		f := New(Options{Decider: testEngine(), Upstreams: []string{up.addr}, Timeout: 10 * time.Second})
		pc, l := listenPair(t)
		done := make(chan error, 1)
		go func() { done <- f.Serve(pc, l) }()
		server := pc.LocalAddr().String()
		query(t, server, srcDomains, "udp", "allowed.example", dns.TypeA, false)
		query(t, server, srcDomains, "tcp", "tc.example", dns.TypeA, false)
		// Queries stuck on the silent upstream, and an idle TCP connection.
		for range 5 {
			c, err := net.Dial("udp", server)
			if err != nil {
				t.Fatal(err)
			}
			m := new(dns.Msg)
			m.SetQuestion("slow.example.", dns.TypeA)
			b, _ := m.Pack()
			c.Write(b)
			defer c.Close()
		}
		idle, err := net.Dial("tcp", server)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		for up.count("slow.example") < 5 { // all five are waiting upstream
			time.Sleep(time.Millisecond)
		}
		// Shutdown cancels the upstream waits rather than sitting out the 10s.
		if err := f.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	// The upstream's cleanups have not run yet: they are t.Cleanup. Stop
	// counting its goroutines by waiting for ours only to go.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+4 && time.Now().Before(deadline) { // +4: the upstream's two servers' loops
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+4 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after shutdown:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestPerSandboxLimit(t *testing.T) {
	f := New(Options{Decider: testEngine()})
	for range maxInflight {
		if !f.inflight.Acquire("domains") {
			t.Fatal("refused below the limit")
		}
	}
	if f.inflight.Acquire("domains") {
		t.Error("admitted past the limit")
	}
	if !f.inflight.Acquire("iponly") {
		t.Error("one sandbox's limit blocks another")
	}
	req := new(dns.Msg)
	req.SetQuestion("allowed.example.", dns.TypeA)
	if r := f.handle(srcDomains, req); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("over the limit: %v", r)
	}
	for range maxInflight {
		f.inflight.Release("domains")
	}
	f.inflight.Release("iponly")
	// Released slots are given again (Slots' own test checks nothing is
	// kept for idle sandboxes).
	for range maxInflight {
		if !f.inflight.Acquire("domains") {
			t.Fatal("released slots are not given again")
		}
	}
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(inner)
	defer l.Close()
	var conns []net.Conn
	for range maxTCPConnsPerSource + 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var accepted []net.Conn
	for range maxTCPConnsPerSource {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, c)
	}
	// The next two are closed by Accept; their clients see EOF.
	go l.Accept() // takes and closes the excess; returns when l closes
	for _, c := range conns[maxTCPConnsPerSource:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("connection past the per-source limit was served")
		}
	}
	accepted[0].Close()
	accepted[0].Close() // twice: counted once
	l.mu.Lock()
	n := l.per[srcDomains]
	l.mu.Unlock()
	if n != maxTCPConnsPerSource-1 {
		t.Errorf("count %d after a close, want %d", n, maxTCPConnsPerSource-1)
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nsearch example\nnameserver 127.0.0.53\nnameserver ::1\nnameserver bogus\noptions edns0\n"), 0o644)
	got, err := UpstreamsFromResolvConf(p)
	if err != nil || !slices.Equal(got, []string{"127.0.0.53:53", "[::1]:53"}) {
		t.Errorf("got %v, %v", got, err)
	}
	os.WriteFile(p, []byte("search example\n"), 0o644)
	if _, err := UpstreamsFromResolvConf(p); err == nil {
		t.Error("no error for a resolv.conf without nameservers")
	}
}
