package dnsfilter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"msb.dev/msb/netpolicy"
)

// Loopback source addresses the test clients bind, one per sandbox role.
var (
	srcDomains = netip.MustParseAddr("127.0.0.1") // domain rules
	srcIPOnly  = netip.MustParseAddr("127.0.0.2") // only a CIDR rule
	srcNoRules = netip.MustParseAddr("127.0.0.4") // a sandbox with no rules
	srcUnknown = netip.MustParseAddr("127.0.0.3") // no sandbox
)

// upstream is a real miekg/dns server on loopback serving the test zone.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen map[string]int // queries per lower-case name
}

func (u *upstream) count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[name]
}

func rr(t testing.TB, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{seen: map[string]int{}}
	zone := map[string][]string{
		"allowed.example.": {"allowed.example. 300 IN A 203.0.113.10"},
		"rebind.example.":  {"rebind.example. 300 IN A 10.1.2.3"},
		"meta.example.":    {"meta.example. 300 IN A 169.254.169.254"},
		"cname.example.":   {"cname.example. 300 IN CNAME allowed.example.", "allowed.example. 300 IN A 203.0.113.10", "other.example. 300 IN A 203.0.113.99"},
		"mixed.example.":   {"mixed.example. 300 IN A 203.0.113.11", "mixed.example. 300 IN A 10.1.2.4"},
		"blocked.example.": {"blocked.example. 300 IN A 203.0.113.66"},
		"covered.example.": {"covered.example. 300 IN A 198.51.100.5"},
		"partly.example.":  {"partly.example. 300 IN A 198.51.100.6", "partly.example. 300 IN A 203.0.113.7"},
		"tc.example.":      {"tc.example. 300 IN A 203.0.113.20"},
		"txt.example.":     {`txt.example. 300 IN TXT "hello"`},
		"https.example.":   {`https.example. 300 IN HTTPS 1 . alpn="h2" ipv4hint="203.0.113.30"`},
		"zero.example.":    {"zero.example. 0 IN A 203.0.113.40"},
	}
	// Parsed once, so the upstream is a fair baseline in BenchmarkQueries.
	parsed := map[string][]dns.RR{}
	for name, recs := range zone {
		for _, s := range recs {
			parsed[name] = append(parsed[name], rr(t, s))
		}
	}
	soa := rr(t, "example. 60 IN SOA ns.example. host.example. 1 60 60 60 60")
	extraA := rr(t, "txt.example. 300 IN A 203.0.113.31")
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		u.mu.Lock()
		u.seen[strings.TrimSuffix(name, ".")]++
		u.mu.Unlock()
		if name == "slow.example." {
			return // never answers
		}
		m := new(dns.Msg)
		m.SetReply(req)
		_, udp := w.RemoteAddr().(*net.UDPAddr)
		if name == "tc.example." && udp {
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
		recs, ok := parsed[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		}
		for _, r := range recs {
			if r.Header().Rrtype == q.Qtype || r.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, r)
			}
		}
		if name == "txt.example." {
			m.Extra = append(m.Extra, extraA)
		}
		w.WriteMsg(m)
	})
	pc, l := listenPair(t)
	u.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-done })
	}
	return u
}

// testEngine is the real Engine with the three sandboxes the tests use.
func testEngine() *netpolicy.Engine {
	e := netpolicy.NewEngine(netpolicy.EngineOptions{})
	var rules []netpolicy.Rule
	for _, d := range []string{"allowed.example", "rebind.example", "meta.example", "cname.example", "mixed.example",
		"slow.example", "tc.example", "txt.example", "https.example", "zero.example", "nx.example"} {
		rules = append(rules, netpolicy.Rule{Policy: "ns/p", Domain: d})
	}
	e.SetSandbox(netpolicy.Sandbox{ID: "domains", IP: srcDomains, Rules: rules})
	e.SetSandbox(netpolicy.Sandbox{ID: "iponly", IP: srcIPOnly, Rules: []netpolicy.Rule{
		{Policy: "ns/ip", CIDR: netip.MustParsePrefix("198.51.100.0/24")},
	}})
	e.SetSandbox(netpolicy.Sandbox{ID: "norules", IP: srcNoRules})
	return e
}

// startFilter serves f on a fresh loopback port and returns the address.
func startFilter(t testing.TB, f *Filter) string {
	t.Helper()
	pc, l := listenPair(t)
	done := make(chan error, 1)
	go func() { done <- f.Serve(pc, l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pc.LocalAddr().String()
}

// query asks server for name/qtype from src over network ("udp" or "tcp"),
// with EDNS (so EDE can come back) unless noEDNS.
func query(t testing.TB, server string, src netip.Addr, network, name string, qtype uint16, noEDNS bool) *dns.Msg {
	t.Helper()
	var local net.Addr = &net.UDPAddr{IP: src.AsSlice()}
	if network == "tcp" {
		local = &net.TCPAddr{IP: src.AsSlice()}
	}
	c := &dns.Client{Net: network, Timeout: 10 * time.Second, Dialer: &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if !noEDNS {
		m.SetEdns0(1232, false)
	}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %s from %s over %s: %v", name, dns.TypeToString[qtype], src, network, err)
	}
	return r
}

func addrsOf(m *dns.Msg) []string {
	var out []string
	for _, r := range m.Answer {
		if a, ok := r.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func edeOf(m *dns.Msg) *dns.EDNS0_EDE {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// listenPair listens on one loopback port over UDP and TCP, trying other
// ports when the TCP side of a free UDP port is taken.
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}
