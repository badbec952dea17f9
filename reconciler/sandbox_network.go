package reconciler

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/netpolicy"
	"msb.dev/msb/vmdriver"
)

// Network is sandbox networking as the Sandbox controller uses it: a
// network namespace and address per sandbox, the rules the DNS filter and
// the egress proxy enforce for it, and its published ports. msbd builds it
// from netpolicy's parts (see NetworkStack).
type Network interface {
	// Reserve gives sandbox id its addresses and namespace path without
	// the kernel work (cheap), for the files of a sandbox whose Attach
	// runs meanwhile; idempotent.
	Reserve(id string) (NetAttachment, error)
	// Attach gives sandbox id its network namespace and addresses (those
	// Reserve gave it); it is idempotent (an existing attachment is
	// returned as it is).
	Attach(id string) (NetAttachment, error)
	// Lookup returns sandbox id's attachment if it has one (cheap: no
	// kernel calls, for every reconcile of a running sandbox).
	Lookup(id string) (NetAttachment, bool)
	// Detach removes what Attach made; idempotent.
	Detach(id string) error
	// Enforce sets what the sandbox may reach: the union of rules (none:
	// nothing). It applies to the next DNS answer and connection.
	Enforce(sb netpolicy.Sandbox)
	// Forget drops the sandbox's rules, pins and decision log.
	Forget(id string)
	// Publish makes ports reach the sandbox at ip; idempotent for the
	// same ports. Unpublish closes them all.
	Publish(id string, ports []vmdriver.Port, ip netip.Addr) error
	Unpublish(id string)
}

// NetAttachment is a sandbox's place on the network.
type NetAttachment struct {
	// NetNSPath is the namespace the driver joins.
	NetNSPath string
	// Gateway is the host end: the sandbox's default route and DNS server.
	Gateway netip.Addr
	IP      netip.Addr
}

// attachNetwork gives spec the sandbox's network: the namespace to join,
// resolv.conf and hosts. The namespace and links are made in the
// background, while the driver prepares the sandbox: ready (to be called
// once) waits for them. Without a Network (tests of the controller alone)
// the driver gives the sandbox loopback only.
func (r *SandboxReconciler) attachNetwork(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec *vmdriver.Spec) (ready func() error, err error) {
	if r.Network == nil {
		return func() error { return nil }, nil
	}
	att, err := r.Network.Reserve(sb.Metadata.UID)
	if err != nil {
		return nil, fmt.Errorf("attaching the sandbox's network: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Network.Attach(sb.Metadata.UID)
		done <- err
	}()
	ready = func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("attaching the sandbox's network: %w", err)
		}
		return nil
	}
	spec.NetNSPath = att.NetNSPath
	spec.Files = append(spec.Files,
		vmdriver.File{Path: "/etc/resolv.conf", Data: []byte("nameserver " + att.Gateway.String() + "\n"), Mode: 0o644},
		vmdriver.File{Path: "/etc/hosts", Data: []byte(hostsFile(att.IP, sb.Metadata.Name)), Mode: 0o644})
	st.IP = att.IP.String()
	if err := r.enforce(sb, st, att.IP); err != nil {
		ready()
		return nil, err
	}
	return ready, nil
}

func hostsFile(ip netip.Addr, hostname string) string {
	return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + ip.String() + "\t" + hostname + "\n"
}

// enforce hands the network the rules of the policies selecting sb now and
// records their names in status. Called at every start and every reconcile
// of a running sandbox, so a changed policy or label applies at once.
func (r *SandboxReconciler) enforce(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, ip netip.Addr) error {
	if r.Network == nil {
		return nil
	}
	objs, _, err := r.Store.List(v1alpha1.KindNetworkPolicy, sb.Metadata.Namespace)
	if err != nil {
		return err
	}
	policies := SelectingPolicies(objs, sb.Metadata.Labels)
	var names []string
	for _, p := range policies {
		names = append(names, p.Metadata.Name)
	}
	st.NetworkPolicies = names
	r.Network.Enforce(netpolicy.Sandbox{ID: sb.Metadata.UID, Namespace: sb.Metadata.Namespace, Name: sb.Metadata.Name, IP: ip, Rules: CompileRules(policies)})
	return nil
}

// observeNetwork re-applies a running sandbox's rules and ports (after an
// msbd restart they live only in this process). The attachment itself was
// made before the sandbox started (and repaired by hostnet when msbd
// starts); a running sandbox keeps the namespace it joined.
func (r *SandboxReconciler) observeNetwork(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, spec []vmdriver.Port) error {
	if r.Network == nil {
		return nil
	}
	att, ok := r.Network.Lookup(sb.Metadata.UID)
	if !ok {
		// Started without networking (an msbd with --network=false): it
		// has loopback only until it restarts.
		st.IP = ""
		return nil
	}
	st.IP = att.IP.String()
	if err := r.enforce(sb, st, att.IP); err != nil {
		return err
	}
	r.publish(sb, st, spec, att.IP)
	return nil
}

// publish makes spec.ports reach a running sandbox, or says in
// PortsPublished why not (a host port already taken is a condition and a
// Warning event, not a failed sandbox).
func (r *SandboxReconciler) publish(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, ports []vmdriver.Port, ip netip.Addr) {
	if r.Network == nil {
		return
	}
	if len(ports) == 0 {
		r.Network.Unpublish(sb.Metadata.UID)
		v1alpha1.RemoveCondition(&st.Conditions, ConditionPortsPublished)
		return
	}
	if err := r.Network.Publish(sb.Metadata.UID, ports, ip); err != nil {
		msg := "publishing spec.ports: " + err.Error() + "; choose another hostPort (or free that one): the sandbox runs meanwhile, unreachable from the host"
		if cond(st, ConditionPortsPublished) != ReasonPortsNotPublished || v1alpha1.FindCondition(st.Conditions, ConditionPortsPublished).Message != msg {
			r.event(sb, v1alpha1.EventWarning, ReasonPortsNotPublished, msg)
		}
		r.condition(st, ConditionPortsPublished, v1alpha1.ConditionFalse, ReasonPortsNotPublished, msg)
		return
	}
	r.condition(st, ConditionPortsPublished, v1alpha1.ConditionTrue, "Published", "")
}

// unpublish closes a sandbox's ports once it no longer runs.
func (r *SandboxReconciler) unpublish(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) {
	if r.Network == nil {
		return
	}
	r.Network.Unpublish(sb.Metadata.UID)
	if c := v1alpha1.FindCondition(st.Conditions, ConditionPortsPublished); c != nil && c.Status == v1alpha1.ConditionTrue {
		r.condition(st, ConditionPortsPublished, v1alpha1.ConditionFalse, "NotRunning", "the sandbox is not running")
	}
}

// detachNetwork removes everything networking held for the sandbox.
func (r *SandboxReconciler) detachNetwork(id string) error {
	if r.Secrets != nil {
		r.Secrets.Sets.Delete(id)
	}
	if r.Network == nil {
		return nil
	}
	r.Network.Unpublish(id)
	r.Network.Forget(id)
	return r.Network.Detach(id)
}

// specPorts are the sandbox's published ports as the driver spec has them.
func specPorts(sb *v1alpha1.Sandbox) []vmdriver.Port {
	var out []vmdriver.Port
	for _, p := range sb.Spec.Ports {
		proto := "tcp"
		if p.Protocol != "" {
			proto = strings.ToLower(p.Protocol)
		}
		host := p.HostPort
		if host == 0 {
			host = p.ContainerPort // the same number on the host, as the README says
		}
		out = append(out, vmdriver.Port{HostIP: p.HostIP, HostPort: uint16(host), ContainerPort: uint16(p.ContainerPort), Protocol: proto})
	}
	return slices.Clip(out)
}
