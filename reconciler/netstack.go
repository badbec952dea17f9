package reconciler

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
	"msb.dev/msb/netpolicy/dnsfilter"
	"msb.dev/msb/netpolicy/hostnet"
	"msb.dev/msb/netpolicy/proxy"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
)

// ReasonEgressDenied is the Warning event of a denied DNS answer or
// connection (rate-limited by the Engine).
const ReasonEgressDenied = "EgressDenied"

// NetworkStack is the Network msbd runs: hostnet's namespaces, veths and
// nftables table, the Engine the DNS filter and the egress proxy ask, and
// the published-port forwarder.
type NetworkStack struct {
	Net    *hostnet.Net
	Engine *netpolicy.Engine
	Ports  *proxy.Publisher

	dns       *dnsfilter.Filter
	proxy     *proxy.Proxy
	stopAddrs chan struct{} // ends the address subscription
	secrets   *SecretInjection

	mu        sync.Mutex
	published map[string][]vmdriver.Port // what Publish last made, per sandbox
}

var _ Network = (*NetworkStack)(nil)

// Attach implements Network.
func (n *NetworkStack) Attach(id string) (NetAttachment, error) {
	_, existed := n.Net.Get(id)
	a, err := n.Net.Attach(id)
	if err != nil {
		return NetAttachment{}, err
	}
	if !existed {
		// The new host end is a host address before the sandbox runs;
		// the address subscription would tell the Engine only later.
		n.refreshHostAddrs()
	}
	return NetAttachment{NetNSPath: a.NetNSPath, Gateway: a.HostIP, IP: a.IP}, nil
}

// Reserve implements Network.
func (n *NetworkStack) Reserve(id string) (NetAttachment, error) {
	a, err := n.Net.Reserve(id)
	if err != nil {
		return NetAttachment{}, err
	}
	return NetAttachment{NetNSPath: a.NetNSPath, Gateway: a.HostIP, IP: a.IP}, nil
}

// Lookup implements Network.
func (n *NetworkStack) Lookup(id string) (NetAttachment, bool) {
	a, ok := n.Net.Get(id)
	return NetAttachment{NetNSPath: a.NetNSPath, Gateway: a.HostIP, IP: a.IP}, ok
}

// refreshHostAddrs tells the Engine the addresses of msbd's namespace (the
// "host" group): they change as sandboxes come and go.
func (n *NetworkStack) refreshHostAddrs() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	n.Engine.SetHostAddrs(out)
}

// AttachedIDs are the sandboxes that have a network (for orphan collection).
func (n *NetworkStack) AttachedIDs() []string {
	var ids []string
	for _, a := range n.Net.List() {
		ids = append(ids, a.ID)
	}
	return ids
}

// Detach implements Network.
func (n *NetworkStack) Detach(id string) error { return n.Net.Detach(id) }

// Enforce implements Network.
func (n *NetworkStack) Enforce(sb netpolicy.Sandbox) { n.Engine.SetSandbox(sb) }

// Forget implements Network.
func (n *NetworkStack) Forget(id string) { n.Engine.RemoveSandbox(id) }

// Publish implements Network: the ports are published anew only when they
// changed since the last call.
func (n *NetworkStack) Publish(id string, ports []vmdriver.Port, ip netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.published == nil {
		n.published = map[string][]vmdriver.Port{}
	}
	if last, ok := n.published[id]; ok && slices.Equal(last, ports) {
		return nil
	}
	n.Ports.Unpublish(id)
	delete(n.published, id)
	for _, p := range ports {
		if p.Protocol != "" && p.Protocol != "tcp" {
			n.Ports.Unpublish(id)
			return fmt.Errorf("port %d/%s: only TCP ports are published", p.ContainerPort, p.Protocol)
		}
		if err := n.Ports.Publish(id, p.HostIP, p.HostPort, netip.AddrPortFrom(ip, p.ContainerPort)); err != nil {
			n.Ports.Unpublish(id)
			return err
		}
	}
	n.published[id] = ports
	return nil
}

// Unpublish implements Network.
func (n *NetworkStack) Unpublish(id string) {
	n.mu.Lock()
	delete(n.published, id)
	n.mu.Unlock()
	n.Ports.Unpublish(id)
}

// DenyEvents returns the Engine's OnDeny hook: a Warning event on the
// sandbox for each (rate-limited) denial.
func (n *NetworkStack) DenyEvents(rec *Recorder) func(sb netpolicy.Sandbox, d netpolicy.Decision, suppressed int) {
	return func(sb netpolicy.Sandbox, d netpolicy.Decision, suppressed int) {
		if sb.ID == "" {
			return
		}
		msg := fmt.Sprintf("denied %s %s", d.Kind, describeDecision(d))
		if suppressed > 0 {
			msg += fmt.Sprintf(" (and %d more like it since the last event)", suppressed)
		}
		rec.Event(sandboxRef(sb), v1alpha1.EventWarning, ReasonEgressDenied, msg)
	}
}

// sandboxRef names the sandbox netpolicy knows in an event.
func sandboxRef(sb netpolicy.Sandbox) v1alpha1.ObjectReference {
	return v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: sb.Namespace, Name: sb.Name, UID: sb.ID}
}

// LeakEvents returns the proxy's and DNS filter's OnLeak hook: a Warning
// event SecretLeakBlocked naming the sandbox, Secret, key, where and
// destination, never the value.
func (n *NetworkStack) LeakEvents(rec *Recorder) func(sb netpolicy.Sandbox, leak *secretinject.Leak, dst netip.AddrPort) {
	return func(sb netpolicy.Sandbox, leak *secretinject.Leak, dst netip.AddrPort) {
		ref := sandboxRef(sb)
		to := leak.Host
		if dst.IsValid() {
			to += " (" + dst.String() + ")"
		}
		secret := leak.Secret
		if leak.Key != "" {
			secret += " key " + leak.Key
		}
		rec.Event(ref, v1alpha1.EventWarning, ReasonSecretLeakBlocked, fmt.Sprintf("blocked: the placeholder of secret %s in %s to %s, where the Secret may not go", secret, leak.Where, strings.TrimSpace(to)))
	}
}

func describeDecision(d netpolicy.Decision) string {
	s := d.Name
	if d.Addr.IsValid() {
		dst := d.Addr.String()
		if d.Port != 0 {
			dst = netip.AddrPortFrom(d.Addr, d.Port).String()
		}
		if s == "" {
			s = dst
		} else {
			s += " (" + dst + ")"
		}
	}
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s
}

// NetworkLogEnabled implements apiserver.NetworkLog: false with --network=false.
func (rt Runtime) NetworkLogEnabled() bool { return rt.Engine != nil }

// NetworkDecisions implements apiserver.NetworkLog for Runtime.
func (rt Runtime) NetworkDecisions(ctx context.Context, sb *v1alpha1.Sandbox, follow bool, emit func(v1alpha1.NetworkDecision) error) error {
	id := sb.Metadata.UID
	var ch <-chan netpolicy.Decision
	if follow {
		ch = rt.Engine.Follow(ctx, id) // before the backlog: nothing falls between
	}
	for _, d := range rt.Engine.Decisions(id) {
		if err := emit(wireDecision(d)); err != nil {
			return err
		}
	}
	if ch == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-ch:
			if !ok {
				// The sandbox left the Engine (stopped or deleted): keep the
				// stream open until the client goes, as logs -f does.
				<-ctx.Done()
				return nil
			}
			if err := emit(wireDecision(d)); err != nil {
				return err
			}
		}
	}
}

func wireDecision(d netpolicy.Decision) v1alpha1.NetworkDecision {
	out := v1alpha1.NetworkDecision{Time: d.Time, Kind: d.Kind, Name: d.Name, Port: d.Port, Allowed: d.Allowed, Rule: d.Rule, Reason: d.Reason}
	if d.Addr.IsValid() {
		out.Addr = d.Addr.String()
	}
	return out
}
