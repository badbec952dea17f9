package reconciler

import (
	"net/netip"
	"reflect"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
)

func TestCompileRules(t *testing.T) {
	np := func(name string, sel map[string]string, egress ...v1alpha1.EgressRule) v1alpha1.Object {
		return &v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: v1alpha1.NetworkPolicySpec{SandboxSelector: v1alpha1.LabelSelector{MatchLabels: sel}, Egress: egress}}
	}
	objs := []v1alpha1.Object{
		np("web", map[string]string{"app": "agent"}, v1alpha1.EgressRule{
			To:    []v1alpha1.EgressPeer{{Domain: "Pypi.Example.org."}, {Domain: "*.files.example.org"}},
			Ports: []v1alpha1.PolicyPort{{Port: 443}, {Port: 53, Protocol: "UDP"}},
		}),
		np("nets", nil, v1alpha1.EgressRule{To: []v1alpha1.EgressPeer{{CIDR: "203.0.113.0/24"}, {Group: "public"}}}),
		np("udp-only", nil, v1alpha1.EgressRule{To: []v1alpha1.EgressPeer{{Group: "private"}}, Ports: []v1alpha1.PolicyPort{{Port: 5000, Protocol: "UDP"}}}),
		np("other-app", map[string]string{"app": "db"}, v1alpha1.EgressRule{To: []v1alpha1.EgressPeer{{Group: "host"}}}),
	}
	sel := SelectingPolicies(objs, map[string]string{"app": "agent", "tier": "x"})
	var names []string
	for _, p := range sel {
		names = append(names, p.Metadata.Name)
	}
	if !reflect.DeepEqual(names, []string{"nets", "udp-only", "web"}) {
		t.Fatalf("selecting policies %q", names)
	}
	got := CompileRules(sel)
	want := []netpolicy.Rule{
		{Policy: "default/nets", CIDR: netip.MustParsePrefix("203.0.113.0/24")},
		{Policy: "default/nets", Group: "public"},
		{Policy: "default/web", Domain: "pypi.example.org", Ports: []uint16{443}},
		{Policy: "default/web", Domain: "*.files.example.org", Ports: []uint16{443}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules\n got %+v\nwant %+v", got, want)
	}
	if rules := CompileRules(SelectingPolicies(objs, map[string]string{"app": "none"})[:0]); len(rules) != 0 {
		t.Errorf("no policy: rules %+v, want none", rules)
	}
}
