package dnsfilter

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandle feeds the filter arbitrary queries, from each kind of source,
// answered by arbitrary upstream messages: nothing may panic, and every
// answer must pack. Run with `go test -fuzz FuzzHandle ./netpolicy/dnsfilter/`.
func FuzzHandle(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	q := func(name string, t uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, t)
		m.SetEdns0(1232, false)
		return pack(m)
	}
	a := func(rrs ...string) []byte {
		m := new(dns.Msg)
		m.Response = true
		for _, s := range rrs {
			m.Answer = append(m.Answer, rr(f, s))
		}
		return pack(m)
	}
	f.Add(q("allowed.example.", dns.TypeA), a("allowed.example. 300 IN A 203.0.113.10"), byte(0))
	f.Add(q("cname.example.", dns.TypeA), a("cname.example. 300 IN CNAME cname.example.", "cname.example. 1 IN A 10.0.0.1"), byte(0))
	f.Add(q("mixed.example.", dns.TypeA), a("mixed.example. 300 IN A 203.0.113.11", "mixed.example. 300 IN A 169.254.169.254"), byte(0))
	f.Add(q("covered.example.", dns.TypeA), a("covered.example. 300 IN A 198.51.100.5"), byte(1))
	f.Add(q("txt.example.", dns.TypeTXT), a(`txt.example. 300 IN TXT "x"`, "txt.example. 300 IN AAAA ::1"), byte(0))
	f.Add(q("https.example.", dns.TypeHTTPS), a(`https.example. 300 IN HTTPS 1 . ipv4hint="10.0.0.1"`), byte(0))
	f.Add(q("allowed.example.", dns.TypeANY), []byte{}, byte(2))
	f.Add([]byte{0, 1, 2}, []byte{}, byte(3))

	fl := New(Options{Decider: testEngine(), CacheSize: -1})
	sources := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}
	f.Fuzz(func(t *testing.T, query, answer []byte, who byte) {
		req := new(dns.Msg)
		if req.Unpack(query) != nil {
			return // the server drops what does not unpack
		}
		up := new(dns.Msg)
		upErr := up.Unpack(answer)
		fl.exchange = func(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
			if upErr != nil {
				return nil, upErr
			}
			up.Question = q.Question // as a real upstream would echo it
			return up, nil
		}
		src := srcDomains
		switch sources[int(who)%len(sources)] {
		case "127.0.0.2":
			src = srcIPOnly
		case "127.0.0.3":
			src = srcUnknown
		case "127.0.0.4":
			src = srcNoRules
		}
		resp := fl.handle(src, req)
		if resp == nil {
			return
		}
		resp.Truncate(dns.MinMsgSize)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
		for _, rr := range resp.Answer {
			if rr.Header().Rrtype == dns.TypeAAAA {
				t.Fatalf("AAAA handed out: %v", rr)
			}
		}
	})
}
