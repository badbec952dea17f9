// Package netpolicy gives each sandbox a network that reaches exactly what
// the NetworkPolicies selecting it allow. The kernel side (a network
// namespace and veth pair per sandbox, one nftables table) lives in
// netpolicy/hostnet; the DNS filter in netpolicy/dnsfilter; the transparent
// egress proxy and published ports in netpolicy/proxy. This package holds
// what they share: compiled rules, the address groups, the Engine that
// decides for one sandbox (its rules, the names the DNS filter handed it and
// the addresses pinned to them), and the bounded decision log.
//
// netpolicy imports no apis types: the reconciler compiles NetworkPolicy
// objects into Rules and tells the Engine which sandbox has which.
package netpolicy

import (
	"net/netip"
	"time"
)

// Address groups a rule may name.
const (
	GroupPublic    = "public"     // globally routable unicast: none of the others, nor reserved ranges
	GroupPrivate   = "private"    // RFC 1918, RFC 6598 (100.64/10), fc00::/7
	GroupLoopback  = "loopback"   // 127/8, ::1 (the sandbox's own: it never leaves the sandbox)
	GroupLinkLocal = "link-local" // 169.254/16, fe80::/10 (metadata excluded)
	GroupMetadata  = "metadata"   // cloud metadata: 169.254.169.254, fd00:ec2::254
	GroupHost      = "host"       // the addresses of msbd's own network namespace
)

// Rule is one egress allow rule compiled from a NetworkPolicy: exactly one of
// Domain, CIDR and Group is set.
type Rule struct {
	// Policy names where it came from ("namespace/name"), for the decision log.
	Policy string
	// Domain is an exact name ("api.example.com") or a suffix wildcard
	// ("*.example.com": any name below example.com, not example.com
	// itself). Lower case, no trailing dot.
	Domain string
	CIDR   netip.Prefix
	Group  string
	// Ports allowed (TCP; DNS itself is always answered by the filter);
	// empty allows every port.
	Ports []uint16
}

// Sandbox is what enforcement knows of one sandbox: who it is (for logs and
// events) and the union of the rules of the policies selecting it. A sandbox
// with no rules reaches nothing.
type Sandbox struct {
	// ID is the Sandbox UID; Namespace and Name say it for people.
	ID, Namespace, Name string
	// IP is its address on its veth: how the DNS filter and the proxy
	// recognise it.
	IP    netip.Addr
	Rules []Rule
}

// Decision kinds.
const (
	KindDNS = "dns" // a name the sandbox asked the DNS filter for
	KindTCP = "tcp" // a connection the proxy admitted or refused
)

// Decision is one allow or deny, as kept in the decision log and printed by
// `msbctl logs NAME --network`.
type Decision struct {
	Time    time.Time `json:"time"`
	Sandbox string    `json:"sandbox"` // ID
	Kind    string    `json:"kind"`    // KindDNS or KindTCP
	// Name is the DNS name, or the SNI / Host of a connection ("" if none).
	Name string `json:"name,omitempty"`
	// Addr and Port are the destination of a connection, or an address
	// in a DNS answer.
	Addr    netip.Addr `json:"addr,omitzero"`
	Port    uint16     `json:"port,omitempty"`
	Allowed bool       `json:"allowed"`
	// Rule says which rule allowed it ("ns/policy: domain *.example.com");
	// Reason why it was denied ("no policy allows this name", "SNI does not
	// match Host", "address not pinned to name", ...).
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Decider is what the DNS filter and the proxy ask. Engine implements it.
type Decider interface {
	// Sandbox returns the sandbox using source address src.
	Sandbox(src netip.Addr) (Sandbox, bool)
	// AllowName decides whether sandbox src may resolve name (DNS) or
	// connect to it on port (port 0: the DNS question, any port).
	AllowName(src netip.Addr, name string, port uint16) Decision
	// AllowConn decides a connection from src to dst. Without a name an IP
	// (CIDR or group) rule must allow dst on its port. With the name the
	// connection claims (SNI or Host), it is allowed when a domain rule
	// allows the name on the port and dst is pinned to that name for src,
	// or when an IP rule allows dst on the port.
	AllowConn(src netip.Addr, name string, dst netip.AddrPort) Decision
	// IPRuleCovers reports whether a CIDR or group rule of src covers
	// addr on some port: the DNS filter keeps private, loopback,
	// link-local and metadata addresses in answers only then (rebinding
	// protection), and answers a name no domain rule allows when its
	// addresses are covered.
	IPRuleCovers(src netip.Addr, addr netip.Addr) bool
	// Pin records that the DNS filter handed src the address addr for
	// name, valid for ttl (the Engine applies a floor).
	Pin(src netip.Addr, name string, addr netip.Addr, ttl time.Duration)
	// Record keeps d in the sandbox's decision log.
	Record(d Decision)
}
