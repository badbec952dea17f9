package reconciler

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
	"msb.dev/msb/vmdriver"
)

// fakeNetwork records what the Sandbox controller asks of networking.
type fakeNetwork struct {
	mu        sync.Mutex
	attached  map[string]NetAttachment
	enforced  map[string]netpolicy.Sandbox
	published map[string][]vmdriver.Port
	calls     []string
	reserved  map[string]bool
	taken     uint16 // Publish of this host port fails
	next      int
}

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{attached: map[string]NetAttachment{}, enforced: map[string]netpolicy.Sandbox{}, published: map[string][]vmdriver.Port{}}
}

// Reserve gives addresses without recording a call: Attach completes it.
func (n *fakeNetwork) Reserve(id string) (NetAttachment, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.attached[id]; ok {
		return a, nil
	}
	n.next++
	a := NetAttachment{NetNSPath: "/state/netns/" + id, Gateway: netip.MustParseAddr(fmt.Sprintf("172.29.0.%d", 4*n.next+1)), IP: netip.MustParseAddr(fmt.Sprintf("172.29.0.%d", 4*n.next+2))}
	n.attached[id] = a
	if n.reserved == nil {
		n.reserved = map[string]bool{}
	}
	n.reserved[id] = true
	return a, nil
}

func (n *fakeNetwork) Attach(id string) (NetAttachment, error) {
	a, err := n.Reserve(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reserved[id] {
		delete(n.reserved, id)
		n.calls = append(n.calls, "Attach")
	}
	return a, err
}

func (n *fakeNetwork) Lookup(id string) (NetAttachment, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.attached[id]
	return a, ok
}

func (n *fakeNetwork) Detach(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.attached[id]; ok {
		n.calls = append(n.calls, "Detach")
	}
	delete(n.attached, id)
	delete(n.reserved, id)
	return nil
}

func (n *fakeNetwork) Enforce(sb netpolicy.Sandbox) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.enforced[sb.ID] = sb
}

func (n *fakeNetwork) Forget(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.enforced, id)
}

func (n *fakeNetwork) Publish(id string, ports []vmdriver.Port, ip netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range ports {
		if p.HostPort == n.taken {
			return fmt.Errorf("127.0.0.1:%d is already in use", p.HostPort)
		}
	}
	n.published[id] = ports
	return nil
}

func (n *fakeNetwork) Unpublish(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.published, id)
}

func (n *fakeNetwork) rules(id string) []netpolicy.Rule {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.enforced[id].Rules
}

func (h *harness) withNetwork() *fakeNetwork {
	n := newFakeNetwork()
	h.r.Network = n
	return n
}

func (h *harness) createPolicy(name string, sel map[string]string, domains ...string) {
	h.t.Helper()
	var peers []v1alpha1.EgressPeer
	for _, d := range domains {
		peers = append(peers, v1alpha1.EgressPeer{Domain: d})
	}
	np := &v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: v1alpha1.DefaultNamespace},
		Spec: v1alpha1.NetworkPolicySpec{SandboxSelector: v1alpha1.LabelSelector{MatchLabels: sel}, Egress: []v1alpha1.EgressRule{{To: peers}}}}
	if err := h.st.Create(np); err != nil {
		h.t.Fatal(err)
	}
}

// A sandbox starts in its own network namespace with msbd's resolv.conf and
// hosts, its address in status, and the rules of the policies selecting it;
// a policy or label change applies on the next reconcile without a restart.
func TestSandboxNetwork(t *testing.T) {
	h := newHarness(t)
	n := h.withNetwork()
	h.createPolicy("pypi", map[string]string{"app": "agent"}, "pypi.example.org")
	sb := h.create("agent", func(sb *v1alpha1.Sandbox) { sb.Metadata.Labels = map[string]string{"app": "agent"} })
	id := sb.Metadata.UID
	h.mustReconcile("agent")
	specs := h.drv.Created()
	if len(specs) != 1 || specs[0].NetNSPath != "/state/netns/"+id {
		t.Fatalf("driver specs %+v, want the sandbox's namespace", specs)
	}
	files := map[string]string{}
	for _, f := range specs[0].Files {
		files[f.Path] = string(f.Data)
	}
	att, _ := n.Attach(id)
	if files["/etc/resolv.conf"] != "nameserver "+att.Gateway.String()+"\n" || !strings.Contains(files["/etc/hosts"], att.IP.String()+"\tagent\n") {
		t.Errorf("files placed %q", files)
	}
	got := h.get("agent")
	if got.Status.IP != att.IP.String() || !slices.Equal(got.Status.NetworkPolicies, []string{"pypi"}) {
		t.Errorf("status ip %q policies %q", got.Status.IP, got.Status.NetworkPolicies)
	}
	if r := n.rules(id); len(r) != 1 || r[0].Domain != "pypi.example.org" {
		t.Fatalf("rules %+v", r)
	}

	h.drv.Reset()
	h.createPolicy("files", nil, "*.files.example.org")
	h.mustReconcile("agent")
	if r := n.rules(id); len(r) != 2 {
		t.Errorf("after a new policy: rules %+v, want both", r)
	}
	h.update("agent", func(sb *v1alpha1.Sandbox) { sb.Metadata.Labels = map[string]string{"app": "other"} })
	h.mustReconcile("agent")
	if r := n.rules(id); len(r) != 1 || r[0].Domain != "*.files.example.org" {
		t.Errorf("after a label change: rules %+v, want only the policy selecting every sandbox", r)
	}
	if got := h.get("agent").Status.NetworkPolicies; !slices.Equal(got, []string{"files"}) {
		t.Errorf("status policies %q", got)
	}
	wantCalls(t, "policy and label changes", h.drv.Mutations())

	if err := h.st.Delete(v1alpha1.KindSandbox, sb.Metadata.Namespace, sb.Metadata.Name); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("agent")
	if _, ok := n.attached[id]; ok || len(n.enforced) != 0 {
		t.Errorf("after deletion: attached %v, enforced %v", n.attached, n.enforced)
	}
}

// Published ports follow the sandbox; a host port already taken is a
// condition and a Warning event, and the sandbox runs anyway.
func TestSandboxPublishedPorts(t *testing.T) {
	h := newHarness(t)
	n := h.withNetwork()
	n.taken = 18001
	sb := h.create("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Ports = []v1alpha1.Port{{ContainerPort: 8000, HostPort: 18000}} })
	h.mustReconcile("web")
	got := h.get("web")
	wantCond(t, got, ConditionPortsPublished, v1alpha1.ConditionTrue, "Published")
	if p := n.published[sb.Metadata.UID]; len(p) != 1 || p[0].HostPort != 18000 || p[0].ContainerPort != 8000 {
		t.Fatalf("published %+v", p)
	}

	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Ports = []v1alpha1.Port{{ContainerPort: 8000, HostPort: 18001}} })
	h.mustReconcile("web")
	h.mustReconcile("web")
	got = h.get("web")
	wantPhase(t, got, v1alpha1.PhaseRunning)
	c := wantCond(t, got, ConditionPortsPublished, v1alpha1.ConditionFalse, ReasonPortsNotPublished)
	if !strings.Contains(c.Message, "already in use") {
		t.Errorf("condition message %q", c.Message)
	}
	if n := h.eventCount("web", ReasonPortsNotPublished); n != 1 {
		t.Errorf("%d PortsNotPublished events, want 1", n)
	}

	h.exit(sb.Metadata.UID, 0)
	h.update("web", func(sb *v1alpha1.Sandbox) { sb.Spec.Ports = []v1alpha1.Port{{ContainerPort: 8000, HostPort: 18000}} })
	h.mustReconcile("web")
	h.exit(sb.Metadata.UID, 0)
	h.mustReconcile("web")
	if _, ok := n.published[sb.Metadata.UID]; ok {
		t.Error("ports still published for a finished sandbox")
	}
}
