package netpolicy

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// compiled is a Sandbox with its rules indexed for matching. It is never
// modified once published.
type compiled struct {
	sb        Sandbox
	exact     map[string][]compiledRule // domain -> rules
	wildcard  map[string][]compiledRule // "example.com" for "*.example.com"
	ip        []compiledRule
	hasIPRule bool
	// key is the canonical form of what decides for the sandbox: its
	// address and its valid rules as a set (each rule normalised, ports
	// sorted, the rules sorted and deduplicated). Two compiled with the
	// same key decide alike, so SetSandbox moves the rules generation on
	// only when the key differs.
	key string
}

// compiledRule is one rule with its description precomputed, so deciding
// allocates nothing.
type compiledRule struct {
	prefix netip.Prefix // CIDR rules
	group  string       // group rules
	ports  []uint16
	desc   string // "ns/policy: domain *.example.com"
}

func (r *compiledRule) allowsPort(port uint16) bool {
	if len(r.ports) == 0 || port == 0 {
		return true
	}
	for _, p := range r.ports {
		if p == port {
			return true
		}
	}
	return false
}

// matchName returns the first domain rule allowing name on port (0: any).
func (c *compiled) matchName(name string, port uint16) *compiledRule {
	for i, r := range c.exact[name] {
		if r.allowsPort(port) {
			return &c.exact[name][i]
		}
	}
	if len(c.wildcard) == 0 {
		return nil
	}
	// Walk the parents of name: a.b.example.com -> b.example.com -> example.com.
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
		for j, r := range c.wildcard[rest] {
			if r.allowsPort(port) {
				return &c.wildcard[rest][j]
			}
		}
	}
}

// matchIP returns the first CIDR or group rule admitting addr on port (0:
// any). Metadata and host addresses are admitted only by their own group
// or a CIDR of exactly that one address: 0.0.0.0/0 or 169.254.0.0/16 is not
// a deliberate grant of the metadata service.
func (c *compiled) matchIP(addr netip.Addr, port uint16, cls string, isHost bool) *compiledRule {
	sensitive := isHost || cls == GroupMetadata
	for i := range c.ip {
		r := &c.ip[i]
		if !r.allowsPort(port) {
			continue
		}
		var ok bool
		switch {
		case r.group == GroupHost:
			ok = isHost
		case r.group != "":
			ok = !isHost && r.group == cls
		default:
			ok = r.prefix.Contains(addr) && (!sensitive || r.prefix.IsSingleIP())
		}
		if ok {
			return r
		}
	}
	return nil
}

// compile indexes sb's rules. Invalid rules (see ValidateRule) match
// nothing.
func compile(sb Sandbox) *compiled {
	sb.IP = sb.IP.Unmap()
	sb.Rules = append([]Rule(nil), sb.Rules...)
	c := &compiled{sb: sb, exact: map[string][]compiledRule{}, wildcard: map[string][]compiledRule{}}
	keys := make([]string, 0, len(sb.Rules))
	for i := range sb.Rules {
		r := &sb.Rules[i]
		r.Ports = append([]uint16(nil), r.Ports...)
		if ValidateRule(*r) != nil {
			continue
		}
		cr := compiledRule{ports: r.Ports}
		var what string // the rule's kind and target, as in desc
		switch {
		case r.Domain != "":
			d := NormalizeName(r.Domain)
			what = "domain " + d
			cr.desc = describe(r.Policy, "domain "+d, r.Ports)
			if base, ok := strings.CutPrefix(d, "*."); ok {
				c.wildcard[base] = append(c.wildcard[base], cr)
			} else {
				c.exact[d] = append(c.exact[d], cr)
			}
		case r.CIDR.IsValid():
			p := r.CIDR.Masked()
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			cr.prefix = p
			what = "cidr " + p.String()
			cr.desc = describe(r.Policy, "cidr "+p.String(), r.Ports)
			c.ip = append(c.ip, cr)
			c.hasIPRule = true
		default:
			cr.group = r.Group
			what = "group " + r.Group
			cr.desc = describe(r.Policy, "group "+r.Group, r.Ports)
			c.ip = append(c.ip, cr)
			c.hasIPRule = true
		}
		ports := slices.Clone(r.Ports)
		slices.Sort(ports)
		keys = append(keys, describe(r.Policy, what, slices.Compact(ports)))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	// The policy name is kept in the key (it is in the decisions the
	// rules make); NUL separates, as no rule part can contain it.
	c.key = sb.IP.String() + "\x00" + strings.Join(keys, "\x00")
	return c
}

func describe(policy, what string, ports []uint16) string {
	var b strings.Builder
	if policy != "" {
		b.WriteString(policy)
		b.WriteString(": ")
	}
	b.WriteString(what)
	for i, p := range ports {
		if i == 0 {
			b.WriteString(" ports ")
		} else {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String()
}
