package hostnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// refusedWithin bounds the wait for a connection that must not be
// answered (its SYNs are dropped, so only the dialer's timeout ends it).
const refusedWithin = time.Second

// newNetOpts is newNet with options: the ports and a state dir are
// filled in.
func newNetOpts(t *testing.T, o Options) *Net {
	t.Helper()
	o.StateDir = t.TempDir()
	t.Cleanup(func() { cleanupState(o.StateDir) })
	o.DNSPort, o.ProxyPort = 1053, 1080
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, a := range n.List() {
			if err := n.Detach(a.ID); err != nil {
				t.Error(err)
			}
		}
		n.DeleteTable()
	})
	return n
}

// dialWithin opens a TCP connection from inside nsPath, waiting at most d.
func dialWithin(nsPath string, dst netip.AddrPort, d time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNS(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), d)
		return err
	})
	return c, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ruleCounter reads the packet counter of the one rule of the listing
// that contains marker.
func ruleCounter(t *testing.T, listing, marker string) int {
	t.Helper()
	re := regexp.MustCompile(`counter packets (\d+)`)
	for _, l := range strings.Split(listing, "\n") {
		if strings.Contains(l, marker) {
			if m := re.FindStringSubmatch(l); m != nil {
				v, _ := strconv.Atoi(m[1])
				return v
			}
		}
	}
	t.Fatalf("no counter on a rule with %q in\n%s", marker, listing)
	return 0
}

// conntrackCount is nf_conntrack_count of the calling thread's namespace.
func conntrackCount(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return v
}

// holdingProxy accepts connections on l and keeps each open until its
// client closes it; it reports how many it has accepted.
func holdingProxy(t *testing.T, l *net.TCPListener) func() int {
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetReadDeadline(time.Now().Add(time.Minute)) // bounded even if the test forgets
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return accepted
	}
}

// TestConnLimit: a sandbox gets MaxConnsPerSandbox connections through to
// the proxy and no more (the SYNs beyond go unanswered) while they stay
// open; another sandbox is unaffected; closing one makes room again.
func TestConnLimit(t *testing.T) {
	hostNS := enterHostNS(t)
	const max = 16
	n := newNetOpts(t, Options{TableName: "msbtest_conns", MaxConnsPerSandbox: max})
	a, err := n.Attach("greedy")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Attach("neighbour")
	if err != nil {
		t.Fatal(err)
	}
	accepted := holdingProxy(t, listenTCP(t, "0.0.0.0:1080"))
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	dst := func(i int) netip.AddrPort { // a new destination each time
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i%250)}), uint16(80+i/250))
	}
	dialed := 0
	for range max {
		c, err := dialFrom(a.NetNSPath, dst(dialed))
		dialed++
		if err != nil {
			t.Fatalf("connection %d of %d: %v", dialed, max, err)
		}
		conns = append(conns, c)
	}
	run(t, hostNS, "over the cap", func(t *testing.T) {
		for range 3 {
			c, err := dialWithin(a.NetNSPath, dst(dialed), refusedWithin)
			dialed++
			if err == nil {
				c.Close()
				t.Fatalf("connection %d went through; the cap is %d", dialed, max)
			}
			if !isTimeout(err) {
				t.Errorf("connection %d: %v, want a timeout (no SYN-ACK)", dialed, err)
			}
		}
		// The ones under the cap still work.
		if _, err := conns[0].Write([]byte("still there")); err != nil {
			t.Error(err)
		}
	})
	run(t, hostNS, "other sandbox", func(t *testing.T) {
		for i := range 4 {
			c, err := dialFrom(b.NetNSPath, dst(i))
			if err != nil {
				t.Fatalf("sandbox b, connection %d: %v", i, err)
			}
			c.Close()
		}
	})
	run(t, hostNS, "room after close", func(t *testing.T) {
		// Closed on both sides, the connection is in TIME_WAIT and no
		// longer counts. Bounded retries: the proxy's side closes soon
		// after the client's.
		conns[0].Close()
		var err error
		for try := 0; try < 5; try++ {
			var c net.Conn
			c, err = dialWithin(a.NetNSPath, dst(dialed), refusedWithin)
			dialed++
			if err == nil {
				conns = append(conns, c)
				return
			}
		}
		t.Fatalf("no connection after closing one: %v", err)
	})
	listing := nftList(t, hostNS, "msbtest_conns")
	dropped := ruleCounter(t, listing, "ct count over")
	t.Logf("cap %d: %d dialed by a, %d accepted by the proxy (a and b), SYNs dropped over the cap: %d\n%s",
		max, dialed, accepted(), dropped, listing)
	if dropped == 0 {
		t.Error("the ct count rule dropped nothing")
	}
}

// TestFlowRate floods the DNS port with new UDP flows from one sandbox:
// the rate limit lets about burst + rate × elapsed through and drops the
// rest (the control without a limit lets through far more), DNS flows
// get the short ct timeout, and another sandbox's query still gets
// through. Each case runs in a host namespace of its own.
func TestFlowRate(t *testing.T) {
	requireRoot(t)
	const rate, burst = 100, 100
	const socks, dests = 16, 250 // 4000 flows
	var limited int
	for _, c := range []struct {
		name string
		rate int
	}{{"limited", rate}, {"control without limits", -1}} {
		t.Run(c.name, func(t *testing.T) {
			hostNS := enterHostNS(t)
			table := "msbtest_flows"
			o := Options{TableName: table, NewFlowsPerSecond: c.rate, NewFlowBurst: burst}
			if c.rate < 0 {
				o.MaxConnsPerSandbox = -1 // which would stop the flood at 1024 flows
			}
			n := newNetOpts(t, o)
			a, err := n.Attach("flooder")
			if err != nil {
				t.Fatal(err)
			}
			b, err := n.Attach("quiet")
			if err != nil {
				t.Fatal(err)
			}
			dns := listenUDP(t, "0.0.0.0:1053")
			forceRcvBuf(t, dns, 16<<20)
			before := conntrackCount(t)

			// Count the flood at the DNS port while it is sent.
			got := make(chan map[string]int, 1)
			go func() {
				seen := map[string]int{}
				buf := make([]byte, 64)
				end := time.Now().Add(30 * time.Second)
				for time.Now().Before(end) {
					dns.SetReadDeadline(time.Now().Add(time.Second))
					k, _, err := dns.ReadFromUDPAddrPort(buf)
					if err != nil {
						break // a second of quiet: the flood is over
					}
					seen[string(buf[:k])]++
				}
				got <- seen
			}()
			start := time.Now()
			sent, err := floodDNS(a.NetNSPath, socks, dests)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			seen := <-got
			recv := seen["f"]
			ctAfter := conntrackCount(t)
			flows, maxTimeout := dnsFlows(t, a.IP)
			listing := nftList(t, hostNS, table)
			t.Logf("sent %d new UDP flows to port 53 in %v; the DNS port got %d; conntrack entries %d -> %d, %d of them a's DNS flows (longest timeout left %d s)",
				sent, elapsed.Round(time.Millisecond), recv, before, ctAfter, flows, maxTimeout)

			if c.rate < 0 {
				if recv <= burst+rate {
					t.Errorf("control: only %d of %d arrived without a limit", recv, sent)
				}
				if limited > 0 && recv <= limited {
					t.Errorf("control: %d arrived without the limit, %d with it", recv, limited)
				}
				return
			}
			limited = recv
			dropped := ruleCounter(t, listing, "limit rate over")
			t.Logf("dropped by the rate limit: %d\n%s", dropped, listing)
			// The kernel's bucket holds rate+burst tokens; the
			// second of rate and 50 are slack for the reader's
			// wait and scheduling, not a timing claim.
			bound := burst + rate + int(float64(rate)*elapsed.Seconds()) + rate + 50
			if recv == 0 || recv > bound {
				t.Errorf("%d of %d flows arrived, want 1..%d", recv, sent, bound)
			}
			if dropped == 0 || recv+dropped > sent {
				t.Errorf("rate limit counter %d, arrivals %d, sent %d", dropped, recv, sent)
			}
			if maxTimeout > dnsTimeoutSecs {
				t.Errorf("a DNS flow has %d s left, want at most %d", maxTimeout, dnsTimeoutSecs)
			}
			if flows > recv+rate {
				t.Errorf("%d DNS flows of a in conntrack, %d arrived", flows, recv)
			}

			run(t, hostNS, "other sandbox", func(t *testing.T) {
				if err := sendUDP(b.NetNSPath, netip.Addr{}, netip.AddrPortFrom(b.HostIP, 53), "from b"); err != nil {
					t.Fatal(err)
				}
				if msg, from, err := readFrom(dns, arriveWithin); err != nil || msg != "from b" || from.Addr() != b.IP {
					t.Errorf("b's query: %q from %s, %v", msg, from, err)
				}
			})
			run(t, hostNS, "flooder again later", func(t *testing.T) {
				// A rate, not a ban: the bucket refills (bounded
				// retries, one query each 200ms).
				for try := range 25 {
					msg := fmt.Sprintf("again %d", try)
					if err := sendUDP(a.NetNSPath, netip.Addr{}, netip.AddrPortFrom(a.HostIP, 53), msg); err != nil {
						t.Fatal(err)
					}
					if got, _, err := readFrom(dns, 200*time.Millisecond); err == nil && strings.HasPrefix(got, "again") {
						return
					}
				}
				t.Error("the flooding sandbox never got a query through again")
			})
		})
	}
}

// floodDNS sends one datagram from each of socks sockets to port 53 of
// each of dests addresses (so socks × dests new flows), from inside
// nsPath, as fast as it can.
func floodDNS(nsPath string, socks, dests int) (int, error) {
	sent := 0
	err := inNS(nsPath, func() error {
		var cs []*net.UDPConn
		defer func() {
			for _, c := range cs {
				c.Close()
			}
		}()
		for range socks {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			cs = append(cs, c)
		}
		for d := range dests {
			to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + d%250)}), 53))
			if d >= 250 {
				to.IP = net.IPv4(203, 0, 113, byte(1+d%250))
			}
			for _, c := range cs {
				if _, err := c.WriteToUDP([]byte("f"), to); err != nil {
					return err
				}
				sent++
			}
		}
		return nil
	})
	return sent, err
}

// forceRcvBuf makes c's receive buffer big enough to hold the whole flood
// (SO_RCVBUFFORCE: rmem_max would cap SO_RCVBUF), so what is counted is
// what the rules let through.
func forceRcvBuf(t *testing.T, c *net.UDPConn, size int) {
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) })
	if serr != nil {
		t.Fatal(serr)
	}
}

// dnsFlows counts the conntrack entries of UDP flows from src to port 53
// in the calling thread's namespace, and the longest time one has left.
func dnsFlows(t *testing.T, src netip.Addr) (n int, maxLeft uint32) {
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == 53 && f.Forward.SrcIP.Equal(src.AsSlice()) {
			n++
			maxLeft = max(maxLeft, f.TimeOut)
		}
	}
	return n, maxLeft
}
