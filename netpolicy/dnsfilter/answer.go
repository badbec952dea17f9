package dnsfilter

import (
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"msb.dev/msb/netpolicy"
)

// maxAnswerAddrs bounds the addresses handed out (and pinned) per answer.
const maxAnswerAddrs = 32

// maxChain bounds the CNAME chain followed in an answer.
const maxChain = 16

// answer decides and builds the reply to req from sandbox sb at src.
func (f *Filter) answer(src netip.Addr, sb netpolicy.Sandbox, req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	if r := f.leakInName(sb, req); r != nil {
		return r
	}
	if q.Qclass != dns.ClassINET {
		return reply(req, dns.RcodeNotImplemented)
	}
	switch q.Qtype {
	case dns.TypeANY:
		return reply(req, dns.RcodeNotImplemented)
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT, dns.TypeMAILA, dns.TypeMAILB:
		return reply(req, dns.RcodeRefused)
	case dns.TypeAAAA:
		// IPv6 is off inside sandboxes: an empty answer makes clients fall
		// back to A at once. No decision: nothing is handed out.
		return reply(req, dns.RcodeSuccess)
	}
	name := netpolicy.NormalizeName(q.Name)
	dec := f.o.Decider.AllowName(src, name, 0)
	dec.Sandbox, dec.Kind, dec.Name = sb.ID, netpolicy.KindDNS, name
	if !dec.Allowed {
		if q.Qtype != dns.TypeA || !hasIPRules(sb) {
			return f.deny(req, dec, "denied by policy: "+dec.Reason)
		}
		return f.answerCovered(src, req, dec, name)
	}
	up, age, err := f.resolve(name, q.Qtype)
	if err != nil {
		f.o.Log.Debug("dns: upstream failed", "sandbox", sb.ID, "name", name, "err", err)
		return replyEDE(req, dns.RcodeServerFailure, dns.ExtendedErrorCodeNoReachableAuthority, "upstream resolvers did not answer")
	}
	if q.Qtype != dns.TypeA {
		f.o.Decider.Record(dec)
		return passOther(req, up, age)
	}
	resp := reply(req, up.Rcode)
	chain, as := walkChain(up.Answer, q.Name)
	resp.Ns = negative(up, age)
	if len(as) == 0 { // NXDOMAIN, or a name without addresses
		f.o.Decider.Record(dec)
		resp.Answer = aged(chain, age)
		return resp
	}
	var kept []dns.RR
	var dropped netip.Addr
	for _, rr := range as {
		a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
		if netpolicy.Classify(a) != netpolicy.GroupPublic && !f.o.Decider.IPRuleCovers(src, a) {
			dropped = a
			continue
		}
		if len(kept) < maxAnswerAddrs {
			kept = append(kept, rr)
		}
	}
	if dropped.IsValid() {
		d := dec
		d.Allowed, d.Rule, d.Addr = false, "", dropped
		d.Reason = "rebinding protection: answer address is not public and no IP rule covers it"
		if len(kept) == 0 {
			return f.deny(req, d, d.Reason)
		}
		f.o.Decider.Record(d)
	}
	kept = aged(kept, age)
	for _, rr := range kept {
		a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
		f.o.Decider.Pin(src, name, a, time.Duration(rr.Header().Ttl)*time.Second)
	}
	dec.Addr, _ = netip.AddrFromSlice(kept[0].(*dns.A).A.To4())
	f.o.Decider.Record(dec)
	resp.Answer = append(aged(chain, age), kept...)
	return resp
}

// leakInName refuses a query whose name carries a placeholder of sb's
// Secrets, before anything else is decided and before anything is
// forwarded; nil when the name is clean. REFUSED rather than NXDOMAIN:
// the name may well exist, msb just won't ask.
func (f *Filter) leakInName(sb netpolicy.Sandbox, req *dns.Msg) *dns.Msg {
	if f.o.Secrets == nil {
		return nil
	}
	l := f.o.Secrets(sb.ID).LeakInName(req.Question[0].Name)
	if l == nil {
		return nil
	}
	name := netpolicy.NormalizeName(req.Question[0].Name)
	f.o.Decider.Record(netpolicy.Decision{
		Sandbox: sb.ID, Kind: netpolicy.KindDNS, Name: name,
		Reason: "secret leak blocked: " + l.Secret + "/" + l.Key + " in " + l.Where,
	})
	if f.o.OnLeak != nil {
		f.o.OnLeak(sb, l)
	}
	return replyEDE(req, dns.RcodeRefused, dns.ExtendedErrorCodeBlocked, "msb: secret leak blocked")
}

// answerCovered answers an A query for a name no domain rule allows when
// every address in the upstream answer is covered by an IP rule (the
// sandbox could connect to them by address anyway); otherwise it denies.
// Nothing is pinned: the IP rule admits those connections by itself.
func (f *Filter) answerCovered(src netip.Addr, req *dns.Msg, dec netpolicy.Decision, name string) *dns.Msg {
	q := req.Question[0]
	up, age, err := f.resolve(name, q.Qtype)
	if err != nil || up.Rcode != dns.RcodeSuccess {
		return f.deny(req, dec, "denied by policy: "+dec.Reason)
	}
	chain, as := walkChain(up.Answer, q.Name)
	if len(as) == 0 || len(as) > maxAnswerAddrs {
		return f.deny(req, dec, "denied by policy: "+dec.Reason)
	}
	for _, rr := range as {
		a, _ := netip.AddrFromSlice(rr.(*dns.A).A.To4())
		if !f.o.Decider.IPRuleCovers(src, a) {
			dec.Addr = a
			return f.deny(req, dec, "denied by policy: "+dec.Reason)
		}
	}
	dec.Allowed, dec.Reason = true, ""
	dec.Rule = "IP rules cover every address in the answer"
	dec.Addr, _ = netip.AddrFromSlice(as[0].(*dns.A).A.To4())
	f.o.Decider.Record(dec)
	resp := reply(req, dns.RcodeSuccess)
	resp.Answer = append(aged(chain, age), aged(as, age)...)
	return resp
}

// deny records d as a denial and answers NXDOMAIN with EDE 15 (Blocked).
func (f *Filter) deny(req *dns.Msg, d netpolicy.Decision, text string) *dns.Msg {
	d.Allowed, d.Rule = false, ""
	if d.Reason == "" {
		d.Reason = text
	}
	f.o.Decider.Record(d)
	return replyEDE(req, dns.RcodeNameError, dns.ExtendedErrorCodeBlocked, "msb: "+text)
}

// passOther answers a non-address query for an allowed name from up,
// without any A or AAAA record or SVCB/HTTPS address hint: the sandbox gets
// addresses only through A answers, which pin them.
func passOther(req, up *dns.Msg, age uint32) *dns.Msg {
	resp := reply(req, up.Rcode)
	resp.Answer = aged(withoutAddrs(up.Answer), age)
	resp.Ns = aged(withoutAddrs(up.Ns), age)
	return resp
}

func withoutAddrs(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A, *dns.AAAA, *dns.OPT:
			continue
		case *dns.SVCB:
			c := *rr
			c.Value = withoutHints(rr.Value)
			out = append(out, &c)
			continue
		case *dns.HTTPS:
			c := *rr
			c.Value = withoutHints(rr.Value)
			out = append(out, &c)
			continue
		}
		out = append(out, rr)
	}
	return out
}

func withoutHints(kvs []dns.SVCBKeyValue) []dns.SVCBKeyValue {
	var out []dns.SVCBKeyValue
	for _, kv := range kvs {
		if k := kv.Key(); k != dns.SVCB_IPV4HINT && k != dns.SVCB_IPV6HINT {
			out = append(out, kv)
		}
	}
	return out
}

// walkChain follows the CNAME chain from qname through answer and returns
// the CNAMEs on it and the A records of names on it. Records off the chain
// (whatever an upstream adds) are left out, so an answer cannot smuggle in
// addresses for other names.
func walkChain(answer []dns.RR, qname string) (chain, as []dns.RR) {
	cur := strings.ToLower(dns.Fqdn(qname))
	names := map[string]bool{cur: true}
	for range maxChain {
		var next string
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = strings.ToLower(dns.Fqdn(c.Target))
				chain = append(chain, rr)
				break
			}
		}
		if next == "" || names[next] {
			break
		}
		names[next], cur = true, next
	}
	for _, rr := range answer {
		if a, ok := rr.(*dns.A); ok && a.A.To4() != nil && names[strings.ToLower(a.Hdr.Name)] {
			as = append(as, rr)
		}
	}
	return chain, as
}

// negative keeps the SOA of a negative answer, so clients cache it.
func negative(up *dns.Msg, age uint32) []dns.RR {
	var out []dns.RR
	for _, rr := range up.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			out = append(out, rr)
		}
	}
	return aged(out, age)
}

// aged copies rrs with their TTLs lowered by age (seconds spent in the
// cache). Cached records are shared, so they are never modified in place.
func aged(rrs []dns.RR, age uint32) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		c := dns.Copy(rr)
		if h := c.Header(); h.Ttl > age {
			h.Ttl -= age
		} else {
			h.Ttl = 0
		}
		out = append(out, c)
	}
	return out
}

func hasIPRules(sb netpolicy.Sandbox) bool {
	for _, r := range sb.Rules {
		if r.CIDR.IsValid() || r.Group != "" {
			return true
		}
	}
	return false
}

// reply is an empty answer to req with rcode, with an OPT record when the
// client sent one (and only then, RFC 6891).
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	m.Compress = true
	if req.IsEdns0() != nil {
		m.SetEdns0(maxUDPAnswer, false)
	}
	return m
}

// replyEDE is reply with an Extended DNS Error (RFC 8914) if the client
// speaks EDNS.
func replyEDE(req *dns.Msg, rcode int, code uint16, text string) *dns.Msg {
	m := reply(req, rcode)
	if opt := m.IsEdns0(); opt != nil {
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	}
	return m
}
