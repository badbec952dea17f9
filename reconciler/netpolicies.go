package reconciler

import (
	"net/netip"
	"slices"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
)

// SelectingPolicies returns the NetworkPolicies of objs (one namespace's)
// whose selector matches labels, by name.
func SelectingPolicies(objs []v1alpha1.Object, labels map[string]string) []*v1alpha1.NetworkPolicy {
	var out []*v1alpha1.NetworkPolicy
	for _, o := range objs {
		np, ok := o.(*v1alpha1.NetworkPolicy)
		if ok && np.Metadata.DeletionTimestamp == nil && np.Spec.SandboxSelector.Matches(labels) {
			out = append(out, np)
		}
	}
	slices.SortFunc(out, func(a, b *v1alpha1.NetworkPolicy) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

// CompileRules turns policies into the rules the Engine enforces: the union
// of their egress rules, one Rule per peer. Ports are TCP ports (UDP is
// dropped from sandboxes, DNS aside, so a UDP port allows nothing); a rule
// that lists only UDP ports allows nothing. Validation at apply already
// refused malformed peers; one that slipped through is skipped.
func CompileRules(policies []*v1alpha1.NetworkPolicy) []netpolicy.Rule {
	var rules []netpolicy.Rule
	for _, np := range policies {
		from := np.Metadata.Namespace + "/" + np.Metadata.Name
		for _, er := range np.Spec.Egress {
			var ports []uint16
			for _, p := range er.Ports {
				if p.Protocol == "" || strings.EqualFold(p.Protocol, "TCP") {
					ports = append(ports, uint16(p.Port))
				}
			}
			if len(er.Ports) > 0 && len(ports) == 0 {
				continue // UDP only
			}
			for _, peer := range er.To {
				r := netpolicy.Rule{Policy: from, Ports: ports}
				switch {
				case peer.Domain != "":
					r.Domain = strings.TrimSuffix(strings.ToLower(peer.Domain), ".")
				case peer.CIDR != "":
					pfx, err := netip.ParsePrefix(peer.CIDR)
					if err != nil {
						continue
					}
					r.CIDR = pfx.Masked()
				case peer.Group != "":
					r.Group = peer.Group
				default:
					continue
				}
				rules = append(rules, r)
			}
		}
	}
	return rules
}
