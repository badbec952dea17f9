package netpolicy

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"203.0.113.10", GroupPublic}, // documentation ranges stand in for public hosts in tests
		{"198.51.100.1", GroupPublic},
		{"192.0.2.1", GroupPublic},
		{"2001:db8::1", GroupPublic},
		{"2a00::1", GroupPublic}, // no lookup or traffic: Classify only reads the address
		{"10.1.2.3", GroupPrivate},
		{"172.16.0.1", GroupPrivate},
		{"172.31.255.255", GroupPrivate},
		{"172.32.0.1", GroupPublic},
		{"192.168.1.1", GroupPrivate},
		{"100.64.0.1", GroupPrivate},
		{"100.127.255.255", GroupPrivate},
		{"100.128.0.1", GroupPublic},
		{"fc00::1", GroupPrivate},
		{"fd12:3456::1", GroupPrivate},
		{"127.0.0.1", GroupLoopback},
		{"127.9.9.9", GroupLoopback},
		{"::1", GroupLoopback},
		{"169.254.1.1", GroupLinkLocal},
		{"fe80::1", GroupLinkLocal},
		{"169.254.169.254", GroupMetadata},
		{"fd00:ec2::254", GroupMetadata},
		{"::ffff:169.254.169.254", GroupMetadata},
		{"::ffff:10.0.0.1", GroupPrivate},
		{"0.0.0.0", ""},
		{"0.1.2.3", ""},
		{"::", ""},
		{"224.0.0.1", ""},
		{"239.1.1.1", ""},
		{"255.255.255.255", ""},
		{"240.0.0.1", ""},
		{"ff02::1", ""},
		{"64:ff9b::a01:203", ""}, // NAT64 of 10.1.2.3
		{"2002:a01:203::1", ""},  // 6to4 of 10.1.2.3
		{"198.18.0.1", ""},
	} {
		if got := Classify(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Classify(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := Classify(netip.Addr{}); got != "" {
		t.Errorf("Classify(invalid) = %q", got)
	}
}

func TestValidateRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Rule
		ok   bool
	}{
		{"domain", Rule{Domain: "api.example.com"}, true},
		{"wildcard", Rule{Domain: "*.example.com", Ports: []uint16{443}}, true},
		{"cidr", Rule{CIDR: netip.MustParsePrefix("10.0.0.0/8")}, true},
		{"group", Rule{Group: GroupPublic}, true},
		{"none", Rule{}, false},
		{"two", Rule{Domain: "a.example", Group: GroupPublic}, false},
		{"bad group", Rule{Group: "internet"}, false},
		{"inner wildcard", Rule{Domain: "a.*.example"}, false},
		{"bare star", Rule{Domain: "*."}, false},
		{"port 0", Rule{Group: GroupPublic, Ports: []uint16{0}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateRule(tc.r); (err == nil) != tc.ok {
				t.Errorf("ValidateRule(%+v) = %v, want ok=%v", tc.r, err, tc.ok)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.": "example.com",
		"example.com":  "example.com",
		"":             "",
		".":            "",
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
