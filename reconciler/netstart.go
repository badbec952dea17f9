package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"msb.dev/msb/netpolicy"
	"msb.dev/msb/netpolicy/dnsfilter"
	"msb.dev/msb/netpolicy/hostnet"
	"msb.dev/msb/netpolicy/proxy"
	"msb.dev/msb/secretinject"
)

// NetworkOptions configure StartNetwork.
type NetworkOptions struct {
	StateDir string
	// Pool is --sandbox-cidr: a private IPv4 prefix.
	Pool string
	// DNSPort and ProxyPort are where the DNS filter and the egress proxy
	// listen in msbd's namespace; nftables redirects sandboxes there.
	DNSPort, ProxyPort uint
	// Upstreams are the DNS servers the filter asks (--dns-upstream);
	// empty: those of the host's /etc/resolv.conf.
	Upstreams []string
	// UpstreamCA is --upstream-ca: a PEM file of CAs trusted, beside the
	// system's roots, for the upstreams of intercepted TLS.
	UpstreamCA string
	Events     *Recorder
	Log        *slog.Logger
}

// StartNetwork builds sandbox networking in msbd's network namespace: the
// nftables table and the namespaces of running sandboxes (adopted), the
// Engine, and the DNS filter and egress proxy listening on their ports.
// Close stops the listeners and leaves the namespaces and the table, so
// running sandboxes keep their network while msbd restarts (they reach
// nothing meanwhile: their traffic has nowhere to go).
func StartNetwork(o NetworkOptions) (n *NetworkStack, err error) {
	pool, perr := netip.ParsePrefix(o.Pool)
	switch {
	case perr != nil || !pool.Addr().Is4():
		return nil, fmt.Errorf("--sandbox-cidr %q: want a private IPv4 prefix such as 172.29.0.0/16", o.Pool)
	case o.DNSPort == 0 || o.DNSPort > 65535 || o.ProxyPort == 0 || o.ProxyPort > 65535:
		return nil, fmt.Errorf("--dns-port %d --proxy-port %d: want ports 1-65535 (below 1024 keeps them from other users)", o.DNSPort, o.ProxyPort)
	}
	if len(o.Upstreams) == 0 {
		ups, err := dnsfilter.UpstreamsFromResolvConf("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("finding a DNS upstream for sandboxes: %w; pass --dns-upstream IP:PORT", err)
		}
		if len(ups) == 0 {
			return nil, errors.New("no DNS upstream for sandboxes: /etc/resolv.conf names no nameserver; pass --dns-upstream IP:PORT")
		}
		o.Upstreams = ups
	}
	// What is opened so far is closed again if a later step fails.
	var opened []io.Closer
	defer func() {
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
		}
	}()
	n = &NetworkStack{}
	n.Engine = netpolicy.NewEngine(netpolicy.EngineOptions{OnDeny: n.DenyEvents(o.Events)})
	// Secret injection: msbd's CA (STATE/ca, key 0600; sandboxes trust its
	// certificate only) and the substitutions the proxy applies.
	ca, err := secretinject.LoadOrCreateCA(filepath.Join(o.StateDir, "ca"))
	if err != nil {
		return nil, err
	}
	roots, err := secretinject.UpstreamRoots(o.UpstreamCA)
	if err != nil {
		return nil, fmt.Errorf("--upstream-ca: %w", err)
	}
	n.secrets = &SecretInjection{CA: ca, Sets: &secretinject.Sets{}}
	// Listen first: a port taken is an error before anything changes.
	dnsAddr := ":" + strconv.Itoa(int(o.DNSPort))
	udp, err := net.ListenPacket("udp4", dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("DNS filter (--dns-port): %w", err)
	}
	opened = append(opened, udp)
	tcp, err := net.Listen("tcp4", dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("DNS filter (--dns-port): %w", err)
	}
	opened = append(opened, tcp)
	pln, err := net.Listen("tcp4", ":"+strconv.Itoa(int(o.ProxyPort)))
	if err != nil {
		return nil, fmt.Errorf("egress proxy (--proxy-port): %w", err)
	}
	opened = append(opened, pln)
	n.Net, err = hostnet.New(hostnet.Options{StateDir: o.StateDir, Pool: pool.Masked(), DNSPort: uint16(o.DNSPort), ProxyPort: uint16(o.ProxyPort),
		Logf: func(format string, args ...any) { o.Log.Warn(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return nil, err
	}
	opened = append(opened, n.Net)
	// The "host" group is msbd's namespace's addresses as they are now: an
	// interface that appears later (docker0, a VPN, a DHCP renewal) must not
	// pass for "private" or "public", so every address change refreshes it.
	updates, stop := make(chan netlink.AddrUpdate, 16), make(chan struct{})
	if err := netlink.AddrSubscribe(updates, stop); err != nil {
		return nil, fmt.Errorf("watching the host's addresses: %w", err)
	}
	n.stopAddrs = stop
	go func() {
		for range updates {
			n.refreshHostAddrs()
		}
	}()
	n.refreshHostAddrs()
	n.Ports = proxy.NewPublisher(hostnet.DefaultMark, o.Log)
	leaks := n.LeakEvents(o.Events)
	n.dns = dnsfilter.New(dnsfilter.Options{Decider: n.Engine, Upstreams: o.Upstreams, Log: o.Log, Secrets: n.secrets.Sets.Get,
		OnLeak: func(sb netpolicy.Sandbox, leak *secretinject.Leak) { leaks(sb, leak, netip.AddrPort{}) }})
	n.proxy = proxy.New(proxy.Options{Decider: n.Engine, Log: o.Log,
		Secrets: n.secrets.Sets.Get, CA: ca, UpstreamRoots: roots, OnLeak: leaks})
	go func() {
		if err := n.dns.Serve(udp, tcp); err != nil && !errors.Is(err, dnsfilter.ErrClosed) {
			o.Log.Error("DNS filter stopped", "err", err)
		}
	}()
	go func() {
		if err := n.proxy.Serve(pln); err != nil && !errors.Is(err, net.ErrClosed) {
			o.Log.Error("egress proxy stopped", "err", err)
		}
	}()
	return n, nil
}

// Seam is n as the Sandbox controller's Network: nil (loopback-only
// sandboxes) when msbd runs without networking.
func (n *NetworkStack) Seam() Network {
	if n == nil {
		return nil
	}
	return n
}

// SecretInjection is what the Sandbox controller needs to inject Secrets;
// nil without networking (placeholders then stay placeholders).
func (n *NetworkStack) SecretInjection() *SecretInjection {
	if n == nil {
		return nil
	}
	return n.secrets
}

// Attachments is n for orphan collection; nil without networking.
func (n *NetworkStack) Attachments() NetworkAttachments {
	if n == nil {
		return nil
	}
	return n
}

// DecisionLog is n's Engine for the API's network log; nil without
// networking.
func (n *NetworkStack) DecisionLog() *netpolicy.Engine {
	if n == nil {
		return nil
	}
	return n.Engine
}

// Close stops the DNS filter, the proxy and the published ports.
func (n *NetworkStack) Close() {
	if n == nil {
		return
	}
	if n.stopAddrs != nil {
		close(n.stopAddrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n.dns != nil {
		n.dns.Shutdown(ctx)
	}
	if n.proxy != nil {
		n.proxy.Close()
	}
	if n.Ports != nil {
		n.Ports.Close()
	}
	if n.Net != nil {
		n.Net.Close()
	}
}
