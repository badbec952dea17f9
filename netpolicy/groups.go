package netpolicy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Well-known prefixes behind the address groups. Metadata is checked before
// link-local and private: 169.254.169.254 is inside 169.254/16 and
// fd00:ec2::254 inside fc00::/7, yet a rule for link-local or private must
// never open the cloud metadata service.
var (
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure IMDS, OpenStack, Oracle, DigitalOcean
		netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
		netip.MustParseAddr("169.254.170.2"),   // AWS ECS task credentials
		netip.MustParseAddr("168.63.129.16"),   // Azure WireServer (otherwise "public")
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud (otherwise "private")
	}
	privatePrefixes = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"), // RFC 6598 shared address space (CGNAT)
		netip.MustParsePrefix("fc00::/7"),
	}
	// reservedPrefixes belong to no group: no group rule admits them
	// (only a CIDR rule naming them does). They are the ranges that are
	// not globally routable unicast, or that embed or translate to another
	// address a policy could not see (6to4, Teredo, NAT64).
	//
	// The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
	// 203.0.113.0/24, 2001:db8::/32) are deliberately NOT here: they count
	// as public, because the hermetic end-to-end tests use them as
	// stand-ins for public internet hosts (TESTING.md). Nothing real is
	// ever numbered from them, so treating them as public costs nothing.
	reservedPrefixes = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"; 0.0.0.0 reaches the local host
		netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
		netip.MustParsePrefix("192.88.99.0/24"), // 6to4 relay anycast (deprecated)
		netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
		netip.MustParsePrefix("224.0.0.0/4"),    // multicast
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
		netip.MustParsePrefix("::/128"),         // unspecified
		netip.MustParsePrefix("64:ff9b::/96"),   // NAT64: would translate to any IPv4 address
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("2001::/32"),      // Teredo: embeds an IPv4 address
		netip.MustParsePrefix("2002::/16"),      // 6to4: embeds an IPv4 address
		netip.MustParsePrefix("ff00::/8"),       // multicast
		netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped: callers unmap first
	}
)

// Classify names the address group addr belongs to by its range alone:
// GroupMetadata, GroupLoopback, GroupLinkLocal, GroupPrivate or GroupPublic,
// or "" for reserved addresses no group covers (unspecified, multicast,
// broadcast, NAT64, ...). GroupHost is not a range: the Engine checks it
// against the addresses given to SetHostAddrs. IPv4-mapped IPv6 addresses
// are classified as the IPv4 address they carry.
func Classify(addr netip.Addr) string {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return ""
	}
	for _, m := range metadataAddrs {
		if addr == m {
			return GroupMetadata
		}
	}
	switch {
	case addr.IsLoopback():
		return GroupLoopback
	case addr.IsLinkLocalUnicast():
		return GroupLinkLocal
	case addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast(), addr.IsMulticast():
		return ""
	}
	for _, p := range privatePrefixes {
		if p.Contains(addr) {
			return GroupPrivate
		}
	}
	for _, p := range reservedPrefixes {
		if p.Contains(addr) {
			return ""
		}
	}
	return GroupPublic
}

// validGroups is every group name a Rule may carry.
var validGroups = map[string]bool{
	GroupPublic: true, GroupPrivate: true, GroupLoopback: true,
	GroupLinkLocal: true, GroupMetadata: true, GroupHost: true,
}

// ValidateRule reports what is wrong with r, for the reconciler to turn into
// a condition on the NetworkPolicy. The Engine never rejects a rule: an
// invalid one simply matches nothing.
func ValidateRule(r Rule) error {
	set := 0
	if r.Domain != "" {
		set++
	}
	if r.CIDR.IsValid() {
		set++
	}
	if r.Group != "" {
		set++
	}
	if set != 1 {
		return fmt.Errorf("rule of %s: exactly one of domain, cidr and group must be set (got %d)", r.Policy, set)
	}
	if r.Group != "" && !validGroups[r.Group] {
		return fmt.Errorf("rule of %s: unknown group %q (want one of public, private, loopback, link-local, metadata, host)", r.Policy, r.Group)
	}
	if r.Domain != "" {
		d := strings.TrimPrefix(NormalizeName(r.Domain), "*.")
		if d == "" || strings.Contains(d, "*") || len(d) > 253 {
			return fmt.Errorf("rule of %s: bad domain %q (want a name, or *.name for every name below it)", r.Policy, r.Domain)
		}
	}
	for _, p := range r.Ports {
		if p == 0 {
			return fmt.Errorf("rule of %s: port 0 is not a port", r.Policy)
		}
	}
	return nil
}

// NormalizeName lower-cases name and drops one trailing dot, the form
// domain rules and pins are kept in. It allocates only when name has upper
// case letters, so the proxy can call it on every connection.
func NormalizeName(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}
