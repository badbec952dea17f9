package hostnet

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// vethPrefix is what every host end is called by, and what the rules
// that do not depend on a sandbox match ("msb*"): Attach and Detach then
// only touch the anti-spoofing set, never a chain.
const vethPrefix = "msb"

// sourcesSet names the set of (host veth . sandbox address) pairs: the only
// source address each sandbox interface may use.
const sourcesSet = "sources"

// The per-sandbox conntrack bounds (see DefaultMaxConnsPerSandbox): two
// dynamic sets keyed by the host veth's name, one holding a connection
// count per sandbox, one a token bucket of new flows; and the ct timeout
// object given to sandboxes' DNS flows.
const (
	connsSet   = "conns"
	flowsSet   = "flows"
	dnsTimeout = "dns"
)

// dnsTimeoutSecs is how long a sandbox's UDP DNS flow stays in conntrack
// after its last packet, answered or not (the kernel's default is 30 s
// unanswered, 120 s for a "stream"). One query is one round trip: 5 s is
// glibc's and musl's default resolver timeout (a resend from the same
// socket refreshes the entry), and over twice the DNS filter's default
// upstream timeout (2 s). An answer later than that would find no entry
// to reverse the redirect with and be dropped by the output chain.
const dnsTimeoutSecs = 5

// flowsIdle is how long a sandbox's token bucket outlives its last new
// flow: long enough to be full again by then (a few seconds at the
// default rate), so forgetting it changes nothing, and the set does not keep
// an element for every sandbox that ever ran.
const flowsIdle = time.Minute

// setCap is the size of the two dynamic sets: one element per sandbox
// interface that started a flow recently, so far above any host's
// sandbox count (a full /16 pool is 16384 sandboxes). A full set would
// let new sandboxes' flows through unbounded (an add that fails does not
// match), hence the headroom.
const setCap = 65535

// ctTimeoutMu serializes building ct timeout objects: expr.CtTimeout in
// google/nftables v0.3.0 writes its policy into the package's shared
// default map while marshalling.
var ctTimeoutMu sync.Mutex

// ipsDstNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h:
// the connection's destination was rewritten, i.e. it was redirected.
const ipsDstNAT = 1 << 5

// Registers. reg32_04 is the first 32-bit register after the 16 bytes an
// interface name fills from register 1, so "iifname . ip saddr" lies
// contiguously from register 1 for the set lookup.
const (
	reg1     = unix.NFT_REG_1
	reg32_04 = unix.NFT_REG32_04
)

// table returns the table object (nothing is sent).
func (n *Net) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: n.opts.TableName}
}

func (n *Net) sources() *nftables.Set {
	return &nftables.Set{Table: n.table(), Name: sourcesSet, KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), Concatenation: true}
}

// sourceElem is the set element admitting address ip on interface veth.
func sourceElem(veth string, ip netip.Addr) nftables.SetElement {
	key := make([]byte, unix.IFNAMSIZ, unix.IFNAMSIZ+4)
	copy(key, veth)
	a := ip.As4()
	return nftables.SetElement{Key: append(key, a[:]...)}
}

// buildTable replaces the table with a fresh one holding atts' sources,
// in one batch: the kernel applies it atomically, so a restarting msbd
// never leaves sandboxes unfiltered for an instant.
func (n *Net) buildTable(atts []Attachment) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("hostnet: nftables: %w", err)
	}
	t := n.table()
	// add-then-delete removes an old table without failing when there
	// is none (the batch would be refused as a whole otherwise).
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	set := n.sources()
	elems := make([]nftables.SetElement, 0, len(atts))
	for _, a := range atts {
		elems = append(elems, sourceElem(a.HostVeth, a.IP))
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("hostnet: nftables set: %w", err)
	}

	// KeyByteOrder only tells nft how to print the keys (a string, host
	// order: without it they come out as "").
	conns := &nftables.Set{Table: t, Name: connsSet, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian,
		Dynamic: true, Size: setCap}
	if err := c.AddSet(conns, nil); err != nil {
		return fmt.Errorf("hostnet: nftables set: %w", err)
	}
	flows := &nftables.Set{Table: t, Name: flowsSet, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, Dynamic: true,
		HasTimeout: true, Timeout: flowsIdle, Size: setCap}
	if err := c.AddSet(flows, nil); err != nil {
		return fmt.Errorf("hostnet: nftables set: %w", err)
	}
	ctTimeoutMu.Lock()
	c.AddObj(&nftables.NamedObj{Table: t, Name: dnsTimeout, Type: nftables.ObjTypeCtTimeout,
		Obj: &expr.CtTimeout{L3Proto: unix.NFPROTO_IPV4, L4Proto: unix.IPPROTO_UDP, Policy: expr.CtStatePolicyTimeout{
			expr.CtStateUDPUNREPLIED: dnsTimeoutSecs, expr.CtStateUDPREPLIED: dnsTimeoutSecs}}})
	ctTimeoutMu.Unlock()

	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	v := func(e expr.Any) []expr.Any { return []expr.Any{e} }
	in, out := ifname(expr.MetaKeyIIFNAME), ifname(expr.MetaKeyOIFNAME)

	// guard runs before conntrack (raw priority), so spoofed and IPv6
	// packets never even create a conntrack entry.
	guard := c.AddChain(&nftables.Chain{Name: "guard", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	rule(guard, in, nfproto(unix.NFPROTO_IPV6), v(drop))
	rule(guard, in, nfproto(unix.NFPROTO_IPV4), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Payload{DestRegister: reg32_04, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID, Invert: true},
	}, v(drop))

	// limit bounds what each sandbox puts in the conntrack table. It runs
	// after conntrack (whose state new it needs) but before NAT and long
	// before the entry is confirmed into the table (the last hook of
	// input): a packet it drops takes its unconfirmed entry with it, so a
	// flood over the bounds leaves nothing behind. Nothing can act
	// earlier: without conntrack a new UDP flow cannot be told from the
	// next datagram of an old one. The rate comes first so that the
	// connection count, which walks the sandbox's list of connections,
	// runs at the limited rate alone.
	limit := c.AddChain(&nftables.Chain{Name: "limit", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	newFlow := slices.Concat(in, ctState(expr.CtStateBitNEW))
	if n.opts.NewFlowsPerSecond > 0 {
		rule(limit, newFlow, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Dynset{SrcRegKey: reg1, SetName: flows.Name, SetID: flows.ID, Operation: unix.NFT_DYNSET_OP_UPDATE,
				Timeout: flowsIdle, Exprs: []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Over: true,
					Rate: uint64(n.opts.NewFlowsPerSecond), Unit: expr.LimitTimeSecond, Burst: uint32(n.opts.NewFlowBurst)}}},
		}, v(&expr.Counter{}), v(drop))
	}
	if n.opts.MaxConnsPerSandbox > 0 {
		rule(limit, newFlow, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Dynset{SrcRegKey: reg1, SetName: conns.Name, SetID: conns.ID, Operation: unix.NFT_DYNSET_OP_ADD,
				Exprs: []expr.Any{&expr.Connlimit{Count: uint32(n.opts.MaxConnsPerSandbox), Flags: expr.NFT_CONNLIMIT_F_INV}}},
		}, v(&expr.Counter{}), v(drop))
	}
	// ct timeout only takes on a flow's first packet, while its entry is
	// unconfirmed: after conntrack, before confirmation, as here. The
	// destination port is still 53, before the redirect.
	rule(limit, newFlow, nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_UDP), dport(53),
		v(&expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: dnsTimeout}))

	// redirect: the proxy learns the original destination from conntrack
	// (SO_ORIGINAL_DST); redirect rewrites to the host end's address. One
	// below dstnat: the first NAT binding wins, so a host's own DNAT rules
	// (Docker's published ports, iptables-nft at dstnat) never see a
	// sandbox's connection first.
	redir := c.AddChain(&nftables.Chain{Name: "redirect", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest - 1)})
	rule(redir, in, nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_UDP), dport(53), redirectTo(n.opts.DNSPort))
	rule(redir, in, nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_TCP), dport(53), redirectTo(n.opts.DNSPort))
	rule(redir, in, nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_TCP), redirectTo(n.opts.ProxyPort))

	// input: a sandbox reaches msbd's DNS filter and proxy only through
	// the redirect (a direct connection to either port has no DNAT
	// status and is dropped too), plus replies and ICMP errors about them.
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	rule(input, in, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), v(accept))
	rule(input, in, ctDNAT(), l4proto(unix.IPPROTO_TCP), dport(n.opts.ProxyPort), v(accept))
	rule(input, in, ctDNAT(), l4proto(unix.IPPROTO_TCP), dport(n.opts.DNSPort), v(accept))
	rule(input, in, ctDNAT(), l4proto(unix.IPPROTO_UDP), dport(n.opts.DNSPort), v(accept))
	rule(input, in, v(drop))
	// The two ports are for redirected sandbox traffic alone: from any
	// other interface (the LAN, loopback) a packet to them could pass as a
	// sandbox's by its source address, or reach the proxy unfiltered.
	for _, p := range []struct {
		proto byte
		port  uint16
	}{{unix.IPPROTO_TCP, n.opts.ProxyPort}, {unix.IPPROTO_TCP, n.opts.DNSPort}, {unix.IPPROTO_UDP, n.opts.DNSPort}} {
		rule(input, l4proto(p.proto), dport(p.port), v(drop))
	}

	// forward: nothing is routed to or from a sandbox, whatever
	// net.ipv4.ip_forward says (the host may route for others).
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	rule(fwd, in, v(drop))
	rule(fwd, out, v(drop))

	// output: the host opens connections into a sandbox only from the
	// published-port forwarder, whose sockets carry Mark.
	output := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	rule(output, out, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), v(accept))
	rule(output, out, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(n.opts.Mark)},
	}, v(accept))
	rule(output, out, v(drop))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("hostnet: nftables table inet %s: %w", t.Name, err)
	}
	return nil
}

// setSource adds (add) or removes the anti-spoofing element of a.
func (n *Net) setSource(a Attachment, add bool) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("hostnet: nftables: %w", err)
	}
	el := []nftables.SetElement{sourceElem(a.HostVeth, a.IP)}
	if add {
		err = c.SetAddElements(n.sources(), el)
	} else {
		err = c.SetDeleteElements(n.sources(), el)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("hostnet: nftables set %s element %s . %s: %w", sourcesSet, a.HostVeth, a.IP, err)
	}
	return nil
}

// DeleteTable removes the table (tests, uninstall). Sandboxes attached
// meanwhile are then unfiltered: call it only when none are left.
func (n *Net) DeleteTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("hostnet: nftables: %w", err)
	}
	c.AddTable(n.table())
	c.DelTable(n.table())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("hostnet: delete table inet %s: %w", n.opts.TableName, err)
	}
	return nil
}

// ifname matches any sandbox interface: nft compares only the bytes
// given, which is how `iifname "msb*"` is compiled.
func ifname(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte(vethPrefix)},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

// dport matches the destination port of TCP or UDP (both keep it at
// offset 2); use after l4proto.
func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func redirectTo(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: binaryutil.BigEndian.PutUint16(p)},
		&expr.Redir{RegisterProtoMin: reg1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

// ctBits matches when any of bits is set in conntrack key k.
func ctBits(k expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: k},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

func ctState(bits uint32) []expr.Any { return ctBits(expr.CtKeySTATE, bits) }
func ctDNAT() []expr.Any             { return ctBits(expr.CtKeySTATUS, ipsDstNAT) }
