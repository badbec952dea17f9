package dnsfilter

import (
	"encoding/base32"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// TestSecretLeakInName: a query whose name carries a placeholder of the
// sandbox's Secrets is refused with the EDE text, recorded, reported to
// OnLeak, and never reaches the upstream resolver; clean names still
// resolve; another sandbox (no Secrets) is unaffected.
func TestSecretLeakInName(t *testing.T) {
	up := startUpstream(t)
	e := testEngine()
	ph := secretinject.Placeholder("domains", "default", "llm", "apiKey")
	set, err := secretinject.NewSet([]secretinject.Binding{{
		Placeholder: ph, Value: []byte("sk-VALUE"), Secret: "default/llm", Key: "apiKey",
		AllowedHosts: []string{"allowed.example"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var leaks []*secretinject.Leak
	server := startFilter(t, New(Options{
		Decider: e, Upstreams: []string{up.addr}, Timeout: 300 * time.Millisecond,
		Secrets: func(id string) *secretinject.Set {
			if id == "domains" {
				return set
			}
			return nil
		},
		OnLeak: func(sb netpolicy.Sandbox, l *secretinject.Leak) {
			mu.Lock()
			defer mu.Unlock()
			if sb.ID != "domains" {
				t.Errorf("OnLeak for sandbox %q", sb.ID)
			}
			leaks = append(leaks, l)
		},
	}))

	digits := strings.TrimPrefix(ph, secretinject.PlaceholderPrefix)
	b32 := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(ph)))
	names := map[string]string{
		"plain":       ph + ".allowed.example",
		"digits":      digits + ".allowed.example",
		"split":       digits[:12] + "." + digits[12:] + ".nx.example",
		"hex":         hex.EncodeToString([]byte(ph))[:60] + "." + hex.EncodeToString([]byte(ph))[60:] + ".nx.example",
		"base32":      b32[:40] + "." + b32[40:] + ".blocked.example",
		"upper":       strings.ToUpper(digits) + ".allowed.example",
		"other types": ph + ".txt.example",
	}
	for form, name := range names {
		qtype := dns.TypeA
		if form == "other types" {
			qtype = dns.TypeTXT
		}
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, server, srcDomains, network, name, qtype, false)
			if r.Rcode != dns.RcodeRefused {
				t.Errorf("%s over %s: rcode %s, want REFUSED", form, network, dns.RcodeToString[r.Rcode])
			}
			if ede := edeOf(r); ede == nil || ede.InfoCode != dns.ExtendedErrorCodeBlocked || ede.ExtraText != "msb: secret leak blocked" {
				t.Errorf("%s: EDE %v", form, ede)
			}
			if n := up.count(strings.ToLower(name)); n != 0 {
				t.Errorf("%s: upstream asked %d times", form, n)
			}
		}
	}
	mu.Lock()
	if len(leaks) != 2*len(names) {
		t.Errorf("OnLeak called %d times, want %d", len(leaks), 2*len(names))
	}
	for _, l := range leaks {
		if l.Secret != "default/llm" || l.Key != "apiKey" || !strings.HasPrefix(l.Where, "dns name") {
			t.Errorf("leak %+v", l)
		}
	}
	mu.Unlock()
	var found bool
	for _, d := range e.Decisions("domains") {
		if strings.HasPrefix(d.Reason, "secret leak blocked: default/llm/apiKey in dns name") {
			found = true
			if d.Allowed || d.Kind != netpolicy.KindDNS {
				t.Errorf("decision %+v", d)
			}
		}
		if strings.Contains(d.Reason, "sk-VALUE") || strings.Contains(d.Name, "sk-VALUE") {
			t.Errorf("decision holds the value: %+v", d)
		}
	}
	if !found {
		t.Errorf("no leak decision among %+v", e.Decisions("domains"))
	}

	// Clean names resolve as before, and a sandbox without Secrets is
	// not searched at all.
	if r := query(t, server, srcDomains, "udp", "allowed.example", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(addrsOf(r)) != 1 {
		t.Errorf("clean name: %v", r)
	}
	if r := query(t, server, srcIPOnly, "udp", ph+".covered.example", dns.TypeA, false); r.Rcode == dns.RcodeRefused {
		t.Errorf("sandbox without Secrets refused: %v", r)
	}
}
