package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestTraffic sends real packets from sandbox namespaces and checks where
// they land: DNS at the DNS filter, TCP at the proxy with its original
// destination, everything else nowhere.
func TestTraffic(t *testing.T) {
	hostNS := enterHostNS(t)
	n := newNet(t, "msbtest_traffic", "")
	a, err := n.Attach("sandbox-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Attach("sandbox-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a=%+v b=%+v\n%s", a, b, nftList(t, hostNS, "msbtest_traffic"))

	dnsUDP := listenUDP(t, "0.0.0.0:1053")
	dnsTCP := listenTCP(t, "0.0.0.0:1053")
	proxy := listenTCP(t, "0.0.0.0:1080")
	other := listenUDP(t, netip.AddrPortFrom(a.HostIP, 2222).String())
	otherTCP := listenTCP(t, netip.AddrPortFrom(a.HostIP, 2222).String())

	run(t, hostNS, "dns udp", func(t *testing.T) {
		for _, dst := range []netip.Addr{a.HostIP, netip.MustParseAddr("198.51.100.1")} {
			if err := sendUDP(a.NetNSPath, netip.Addr{}, netip.AddrPortFrom(dst, 53), "q"); err != nil {
				t.Fatal(err)
			}
			msg, from, err := readFrom(dnsUDP, arriveWithin)
			if err != nil || msg != "q" || from.Addr() != a.IP {
				t.Fatalf("DNS to %s: got %q from %s, %v", dst, msg, from, err)
			}
		}
	})
	run(t, hostNS, "dns tcp", func(t *testing.T) {
		c, err := dialFrom(a.NetNSPath, netip.AddrPortFrom(a.HostIP, 53))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := accept(dnsTCP)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
	run(t, hostNS, "tcp to proxy", func(t *testing.T) {
		// Anything TCP lands at the proxy, which learns where it was
		// headed: the internet, another host port, another sandbox.
		for _, dst := range []netip.AddrPort{
			netip.MustParseAddrPort("203.0.113.7:80"),
			netip.AddrPortFrom(a.HostIP, 2222),
			netip.AddrPortFrom(b.IP, 8080),
		} {
			c, err := dialFrom(a.NetNSPath, dst)
			if err != nil {
				t.Fatalf("%s: %v", dst, err)
			}
			s, err := accept(proxy)
			if err != nil {
				t.Fatalf("%s: %v", dst, err)
			}
			od, err := origDst(s)
			if err != nil || od != dst || s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr() != a.IP {
				t.Errorf("connection to %s: original destination %s (%v), from %s", dst, od, err, s.RemoteAddr())
			}
			s.Close()
			c.Close()
		}
		otherTCP.SetDeadline(time.Now())
		if c, err := otherTCP.Accept(); err == nil {
			c.Close()
			t.Error("the listener on host port 2222 got a connection")
		}
	})
	run(t, hostNS, "dropped", func(t *testing.T) {
		inB := listenUDPIn(t, b.NetNSPath, netip.AddrPortFrom(b.IP, 9999).String())
		for _, c := range []struct {
			dst netip.AddrPort
			lis *net.UDPConn
		}{
			{netip.AddrPortFrom(a.HostIP, 2222), other},  // another host port
			{netip.AddrPortFrom(a.HostIP, 1053), dnsUDP}, // the DNS port, not redirected
			{netip.AddrPortFrom(b.IP, 9999), inB},        // another sandbox
		} {
			if err := sendUDP(a.NetNSPath, netip.Addr{}, c.dst, "x"); err != nil {
				t.Fatal(err)
			}
			if ok, got := quiet(c.lis); !ok {
				t.Errorf("UDP to %s arrived: %s", c.dst, got)
			}
		}
	})
	run(t, hostNS, "no ping", func(t *testing.T) {
		err := inNS(a.NetNSPath, func() error {
			c, err := icmp.ListenPacket("ip4:icmp", a.IP.String())
			if err != nil {
				return err
			}
			defer c.Close()
			m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("ping")}}
			wb, _ := m.Marshal(nil)
			if _, err := c.WriteTo(wb, &net.IPAddr{IP: a.HostIP.AsSlice()}); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(quietFor))
			buf := make([]byte, 1500)
			if n, from, err := c.ReadFrom(buf); err == nil {
				return errors.New("got an ICMP reply from " + from.String() + ": " + string(buf[:n]))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	run(t, hostNS, "spoofed source", func(t *testing.T) {
		// Give a's namespace b's address too, and turn off rp_filter so
		// that only the nft anti-spoofing set stands in the way.
		if got, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + a.HostVeth + "/rp_filter"); strings.TrimSpace(string(got)) != "1" {
			t.Errorf("rp_filter on %s is %q", a.HostVeth, got)
		}
		if err := writeSysctl("net/ipv4/conf/"+a.HostVeth+"/rp_filter", "0"); err != nil {
			t.Fatal(err)
		}
		spoof := netip.MustParseAddr("172.29.200.2")
		addAddr(t, a.NetNSPath, spoof)
		addAddr(t, a.NetNSPath, b.IP)
		for _, src := range []netip.Addr{spoof, b.IP} {
			if err := sendUDP(a.NetNSPath, src, netip.AddrPortFrom(a.HostIP, 53), "spoofed"); err != nil {
				t.Fatal(err)
			}
			if ok, got := quiet(dnsUDP); !ok {
				t.Errorf("spoofed DNS from %s arrived: %s", src, got)
			}
		}
		// Control: admitting the address in the set lets it through, so
		// the set is what dropped it.
		if err := n.setSource(Attachment{HostVeth: a.HostVeth, IP: spoof}, true); err != nil {
			t.Fatal(err)
		}
		if err := sendUDP(a.NetNSPath, spoof, netip.AddrPortFrom(a.HostIP, 53), "admitted"); err != nil {
			t.Fatal(err)
		}
		if msg, from, err := readFrom(dnsUDP, arriveWithin); err != nil || msg != "admitted" || from.Addr() != spoof {
			t.Errorf("control: got %q from %s, %v", msg, from, err)
		}
		if err := n.setSource(Attachment{HostVeth: a.HostVeth, IP: spoof}, false); err != nil {
			t.Fatal(err)
		}
	})
	run(t, hostNS, "into sandbox", func(t *testing.T) {
		in := listenTCPIn(t, a.NetNSPath, netip.AddrPortFrom(a.IP, 8080).String())
		dst := netip.AddrPortFrom(a.IP, 8080).String()
		if c, err := net.DialTimeout("tcp4", dst, quietFor); err == nil {
			c.Close()
			t.Error("an unmarked host connection reached the sandbox")
		}
		d := net.Dialer{Timeout: arriveWithin, Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(DefaultMark)) })
			return serr
		}}
		c, err := d.Dial("tcp4", dst)
		if err != nil {
			t.Fatalf("marked connection: %v", err)
		}
		defer c.Close()
		s, err := accept(in)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
}

// TestAttachRestart: Attach is idempotent, a second New adopts with the
// same addresses, and one after a "reboot" (namespace and veth gone)
// rebuilds them.
func TestAttachRestart(t *testing.T) {
	hostNS := enterHostNS(t)
	state := t.TempDir()
	t.Cleanup(func() { cleanupState(state) })
	n := newNet(t, "msbtest_restart", state)
	a, err := n.Attach("s1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := n.Attach("s1")
	if err != nil || again != a {
		t.Fatalf("second Attach: %+v, %v; first %+v", again, err, a)
	}
	b, _ := n.Attach("s2")
	if b.Prefix.Overlaps(a.Prefix) || b.HostVeth == a.HostVeth {
		t.Fatalf("s1 %+v and s2 %+v share", a, b)
	}
	n.Close()

	n2 := newNet(t, "msbtest_restart", state)
	if got := n2.List(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("after restart: %+v", got)
	}
	dns := listenUDP(t, "0.0.0.0:1053")
	sendUDP(a.NetNSPath, netip.Addr{}, netip.AddrPortFrom(a.HostIP, 53), "after restart")
	if msg, _, err := readFrom(dns, arriveWithin); err != nil || msg != "after restart" {
		t.Fatalf("DNS after restart: %q %v", msg, err)
	}
	c, _ := n2.Attach("s3") // allocation skips adopted subnets
	if c.Prefix == a.Prefix || c.Prefix == b.Prefix {
		t.Fatalf("s3 got a used subnet: %+v", c)
	}

	// "Reboot": the namespace and its veth are gone, the record stays.
	if err := deleteLink(a.HostVeth); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(a.NetNSPath, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	n3 := newNet(t, "msbtest_restart", state)
	if got, _ := n3.Get("s1"); got != a || !isNetNS(a.NetNSPath) {
		t.Fatalf("after reboot: %+v (namespace mounted: %v)", got, isNetNS(a.NetNSPath))
	}
	sendUDP(a.NetNSPath, netip.Addr{}, netip.AddrPortFrom(a.HostIP, 53), "after reboot")
	if msg, _, err := readFrom(dns, arriveWithin); err != nil || msg != "after reboot" {
		t.Fatalf("DNS after reboot: %q %v", msg, err)
	}
	t.Logf("\n%s", nftList(t, hostNS, "msbtest_restart"))
}

// TestDetach leaves no link, mount, file or set element, and is
// idempotent.
func TestDetach(t *testing.T) {
	enterHostNS(t)
	n := newNet(t, "msbtest_detach", "")
	a, err := n.Attach("gone")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := n.Detach("gone"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlink.LinkByName(a.HostVeth); err == nil {
		t.Error("veth still there")
	}
	if mounted(t, a.NetNSPath) {
		t.Error("namespace still mounted")
	}
	for _, p := range []string{a.NetNSPath, a.NetNSPath + ".json"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, ok := n.Get("gone"); ok || len(n.List()) != 0 {
		t.Error("still listed")
	}
	if els := sourceElements(t, n); len(els) != 0 {
		t.Errorf("set elements left: %d", len(els))
	}
	// The freed subnet is not handed out again at once.
	if b, _ := n.Attach("next"); b.Prefix == a.Prefix {
		t.Errorf("subnet %s reused at once", a.Prefix)
	}
}

// TestPoolOverlap: a pool overlapping a host route is refused, naming it.
func TestPoolOverlap(t *testing.T) {
	enterHostNS(t)
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tveth0"}, PeerName: "tveth1"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("172.29.5.1/24")
	if err := netlink.AddrAdd(d, addr); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(d)
	_, err := New(Options{StateDir: t.TempDir(), DNSPort: 1053, ProxyPort: 1080, TableName: "msbtest_overlap"})
	if err == nil || !strings.Contains(err.Error(), "172.29.5.0/24 dev tveth0") {
		t.Fatalf("New with an overlapping route: %v", err)
	}
	t.Log(err)
	n := newNetPool(t, netip.MustParsePrefix("172.30.0.0/16"))
	if _, err := n.Attach("x"); err != nil {
		t.Fatal(err)
	}
}

func newNetPool(t *testing.T, pool netip.Prefix) *Net {
	state := t.TempDir()
	t.Cleanup(func() { cleanupState(state) })
	n, err := New(Options{StateDir: state, DNSPort: 1053, ProxyPort: 1080, TableName: "msbtest_pool", Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, a := range n.List() {
			n.Detach(a.ID)
		}
		n.DeleteTable()
	})
	return n
}

// addAddr adds ip/32 to eth0 inside the namespace at nsPath.
func addAddr(t *testing.T, nsPath string, ip netip.Addr) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(sandboxIf)
	if err == nil {
		err = h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestReserveThenAttach: Reserve hands out the addresses and path and
// makes nothing in the kernel; Attach completes that reservation with the
// same addresses; attaches of different sandboxes run at once; Detach of a
// reservation frees it.
func TestReserveThenAttach(t *testing.T) {
	hostNS := enterHostNS(t)
	n := newNet(t, "msbtest_reserve", "")
	r, err := n.Reserve("r1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := n.Reserve("r1"); err != nil || again != r {
		t.Fatalf("second Reserve: %+v, %v; first %+v", again, err, r)
	}
	if _, err := netlink.LinkByName(r.HostVeth); err == nil {
		t.Error("Reserve made the veth")
	}
	if _, err := os.Stat(r.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reserve made the namespace file: %v", err)
	}
	if els := sourceElements(t, n); len(els) != 0 {
		t.Errorf("Reserve added set elements: %d", len(els))
	}
	// r1 and r2 attach at once (each its own namespace and links).
	other, err := n.Reserve("r2")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	got := make([]Attachment, 2)
	for i, id := range []string{"r1", "r2"} {
		go func() {
			runtime.LockOSThread() // never unlocked: discarded at the end
			if err := setns(hostNS); err != nil {
				errs <- err
				return
			}
			var err error
			got[i], err = n.Attach(id)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got[0] != r || got[1] != other {
		t.Fatalf("Attach gave %+v and %+v, reserved %+v and %+v", got[0], got[1], r, other)
	}
	for _, a := range got {
		if _, err := netlink.LinkByName(a.HostVeth); err != nil {
			t.Errorf("%s: veth: %v", a.ID, err)
		}
		if !mounted(t, a.NetNSPath) {
			t.Errorf("%s: namespace not mounted", a.ID)
		}
	}
	if els := sourceElements(t, n); len(els) != 2 {
		t.Errorf("set elements: %d, want 2", len(els))
	}
	for _, id := range []string{"r1", "r2"} {
		if err := n.Detach(id); err != nil {
			t.Fatal(err)
		}
	}
	// A reservation no Attach completed is freed by Detach.
	z, err := n.Reserve("z")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Detach("z"); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Get("z"); ok || len(n.List()) != 0 {
		t.Errorf("reservation still listed after Detach: %+v", n.List())
	}
	if a, err := n.Attach("z"); err != nil || a.Prefix == z.Prefix {
		t.Errorf("Attach after the reservation's Detach: %+v, %v (the freed subnet %s is not reused at once)", a, err, z.Prefix)
	} else {
		n.Detach("z")
	}
}
