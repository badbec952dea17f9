package dnsfilter

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkQueries measures queries/s for an allowed, cached name through
// the filter beside the baseline of the same query sent straight to the
// upstream, both over loopback UDP in the same run, and prints the ratio.
func BenchmarkQueries(b *testing.B) {
	up := startUpstream(b)
	f := New(Options{Decider: testEngine(), Upstreams: []string{up.addr}})
	server := startFilter(b, f)
	perOp := map[string]float64{}
	for _, bc := range []struct{ name, server string }{
		{"upstream-direct", up.addr},
		{"filter-cached", server},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second,
				Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: srcDomains.AsSlice()}}}
			conn, err := c.Dial(bc.server)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			m := new(dns.Msg)
			m.SetQuestion("allowed.example.", dns.TypeA)
			m.SetEdns0(1232, false)
			for b.Loop() {
				r, _, err := c.ExchangeWithConn(m, conn)
				if err != nil || len(r.Answer) != 1 {
					b.Fatalf("%v %v", r, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
			perOp[bc.name] = float64(b.Elapsed()) / float64(b.N)
			if d := perOp["upstream-direct"]; d > 0 && bc.name != "upstream-direct" {
				b.ReportMetric(perOp[bc.name]/d, "x-direct")
			}
		})
	}
	if d, fc := perOp["upstream-direct"], perOp["filter-cached"]; d > 0 && fc > 0 {
		b.Logf("filter (cached) takes %.2fx the time of a query straight to the upstream", fc/d)
	}
}

// BenchmarkHandle measures the filter's own work for one cached allowed
// query, without sockets.
func BenchmarkHandle(b *testing.B) {
	up := startUpstream(b)
	f := New(Options{Decider: testEngine(), Upstreams: []string{up.addr}})
	defer f.Shutdown(b.Context())
	req := new(dns.Msg)
	req.SetQuestion("allowed.example.", dns.TypeA)
	req.SetEdns0(1232, false)
	for b.Loop() {
		if r := f.handle(srcDomains, req); len(r.Answer) != 1 {
			b.Fatal(r)
		}
	}
}
