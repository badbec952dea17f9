package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// sandboxIf is the sandbox end's name inside its namespace.
const sandboxIf = "eth0"

// hostSysctls are set on each host end before it comes up.
var hostSysctls = []struct{ key, val string }{
	// No IPv6 at all: no link-local address, nothing to filter.
	{"net/ipv6/conf/%s/disable_ipv6", "1"},
	// Strict reverse-path filtering: a packet is accepted only with a
	// source routed back through this veth, i.e. this sandbox's address.
	{"net/ipv4/conf/%s/rp_filter", "1"},
	// Never routed beyond the host end: per-interface forwarding is
	// checked on input, so this holds even when the host forwards for
	// others (the forward chain drops too).
	{"net/ipv4/conf/%s/forwarding", "0"},
	{"net/ipv4/conf/%s/proxy_arp", "0"},
	// Answer ARP only for the host end's own address, so a sandbox does
	// not learn the host's other addresses through its veth.
	{"net/ipv4/conf/%s/arp_ignore", "1"},
	{"net/ipv4/conf/%s/arp_announce", "2"},
}

// setupLinks makes (or repairs) the veth pair of a and configures both
// ends. With a fresh namespace any leftover host end is deleted first: its
// peer lives in a namespace that is no longer reachable.
func setupLinks(a Attachment, freshNS bool) error {
	host, err := netlink.LinkByName(a.HostVeth)
	missing := errors.As(err, &netlink.LinkNotFoundError{})
	if err == nil && freshNS {
		if err := netlink.LinkDel(host); err != nil {
			return fmt.Errorf("hostnet: delete stale %s: %w", a.HostVeth, err)
		}
		missing = true
	}
	ns, nerr := netns.GetFromPath(a.NetNSPath)
	if nerr != nil {
		return fmt.Errorf("hostnet: open %s: %w", a.NetNSPath, nerr)
	}
	defer ns.Close()
	if missing {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.HostVeth}, PeerName: sandboxIf, PeerNamespace: netlink.NsFd(ns)}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("hostnet: add veth %s: %w", a.HostVeth, err)
		}
		host, err = netlink.LinkByName(a.HostVeth)
	}
	if err != nil {
		return fmt.Errorf("hostnet: %s: %w", a.HostVeth, err)
	}
	for _, s := range hostSysctls {
		if err := writeSysctl(fmt.Sprintf(s.key, a.HostVeth), s.val); err != nil {
			return err
		}
	}
	if err := addrUp(&netlink.Handle{}, host, a.HostIP, a.Prefix); err != nil {
		return err
	}

	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("hostnet: netlink in %s: %w", a.NetNSPath, err)
	}
	defer h.Close()
	peer, err := h.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("hostnet: %s in %s: %w", sandboxIf, a.NetNSPath, err)
	}
	if err := addrUp(h, peer, a.IP, a.Prefix); err != nil {
		return err
	}
	def := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: net.IP(a.HostIP.AsSlice()),
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if err := h.RouteReplace(def); err != nil {
		return fmt.Errorf("hostnet: default route in %s: %w", a.NetNSPath, err)
	}
	return nil
}

// addrUp gives link addr/prefix and brings it up (idempotent).
func addrUp(h *netlink.Handle, link netlink.Link, addr netip.Addr, prefix netip.Prefix) error {
	ipn := &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(prefix.Bits(), 32)}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipn}); err != nil {
		return fmt.Errorf("hostnet: address %s on %s: %w", ipn, link.Attrs().Name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("hostnet: %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// deleteLink removes the host end (the peer goes with it); absent is fine.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("hostnet: delete %s: %w", name, err)
	}
	return nil
}

// checkPool refuses a pool that overlaps a route of the host other than
// a default route (or one through our own veths, left from before a
// restart): sandbox addresses there would shadow or be shadowed by a
// real network.
func checkPool(pool netip.Prefix) error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("hostnet: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue
		}
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		dst := netip.PrefixFrom(addr.Unmap(), ones).Masked()
		if !dst.Overlaps(pool) {
			continue
		}
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		if isVethName(dev) {
			continue
		}
		desc := dst.String()
		if dev != "" {
			desc += " dev " + dev
		}
		if r.Table != unix.RT_TABLE_MAIN {
			desc += fmt.Sprintf(" table %d", r.Table)
		}
		return fmt.Errorf("hostnet: sandbox pool %s overlaps host route %s; choose another --sandbox-cidr", pool, desc)
	}
	return nil
}

// isVethName reports whether name looks like one of our host ends.
func isVethName(name string) bool {
	if len(name) != len(vethPrefix)+8 || !strings.HasPrefix(name, vethPrefix) {
		return false
	}
	for _, c := range name[len(vethPrefix):] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}
