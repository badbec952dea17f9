package hostnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Bounds for waiting (never asserted on): how long a packet that must
// arrive may take, and how long to watch for one that must not.
const (
	arriveWithin = 5 * time.Second
	quietFor     = 300 * time.Millisecond
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
}

// enterHostNS moves the test goroutine, locked to its thread for the rest
// of the test, into a new network namespace standing in for msbd's: all
// links, routes and nft tables the test makes live there, and die with
// it. The thread is never unlocked, so the runtime discards it when the
// test ends (cleanups run on it first, still inside).
func enterHostNS(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "hostns")
	if err := createNetNS(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNetNS(path) })
	runtime.LockOSThread()
	if err := setns(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// run is t.Run for tests inside a host namespace: a subtest runs on a
// goroutine of its own, which must enter the namespace too, or it would
// act on the machine's.
func run(t *testing.T, hostNS, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		runtime.LockOSThread() // never unlocked: discarded at the end
		if err := setns(hostNS); err != nil {
			t.Fatal(err)
		}
		f(t)
	})
}

func setns(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWNET)
}

// inNS runs f on a fresh thread inside the namespace at path; sockets f
// opens stay in that namespace. The thread is discarded afterwards.
func inNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := setns(path); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// newNet makes a Net in the current (test host) namespace with its own
// table and state dir, and removes every trace afterwards.
func newNet(t *testing.T, table string, state string) *Net {
	t.Helper()
	if state == "" {
		state = t.TempDir()
		t.Cleanup(func() { cleanupState(state) })
	}
	n, err := New(Options{StateDir: state, DNSPort: 1053, ProxyPort: 1080, TableName: table})
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

// cleanupState unmounts whatever is still mounted under state.
func cleanupState(state string) {
	dir := filepath.Join(state, "netns")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		removeNetNS(filepath.Join(dir, e.Name()))
	}
	for unix.Unmount(dir, unix.MNT_DETACH) == nil {
	}
}

// mounted reports whether path is a mount point in /proc/self/mountinfo.
func mounted(t *testing.T, path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fs := strings.Fields(s.Text()); len(fs) > 4 && fs[4] == path {
			return true
		}
	}
	return false
}

// origDst reads SO_ORIGINAL_DST: where the redirected connection was
// headed.
func origDst(c net.Conn) (netip.AddrPort, error) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var m *unix.IPv6Mreq
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		m, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, gerr
	}
	b := m.Multiaddr // a struct sockaddr_in
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}

// accept waits (bounded) for one connection on l.
func accept(l *net.TCPListener) (net.Conn, error) {
	l.SetDeadline(time.Now().Add(arriveWithin))
	return l.Accept()
}

// readFrom waits up to d for one datagram on c.
func readFrom(c *net.UDPConn, d time.Duration) (string, netip.AddrPort, error) {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), from, err
}

// quiet reports whether nothing arrives on c for quietFor.
func quiet(c *net.UDPConn) (bool, string) {
	msg, from, err := readFrom(c, quietFor)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true, ""
	}
	return false, msg + " from " + from.String()
}

// nftList prints the table as nft sees it (from inside the namespace).
func nftList(t *testing.T, nsPath, table string) string {
	out, err := exec.Command("nsenter", "--net="+nsPath, "nft", "list", "table", "inet", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	return string(out)
}

// sendUDP sends msg from inside nsPath (optionally from src) to dst.
func sendUDP(nsPath string, src netip.Addr, dst netip.AddrPort, msg string) error {
	return inNS(nsPath, func() error {
		var laddr *net.UDPAddr
		if src.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
}

// dialFrom opens a TCP connection from inside nsPath.
func dialFrom(nsPath string, dst netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := inNS(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), arriveWithin)
		return err
	})
	return c, err
}

func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listenTCP(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// listenUDPIn and listenTCPIn listen inside the namespace at nsPath.
func listenUDPIn(t *testing.T, nsPath, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNS(nsPath, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listenTCPIn(t *testing.T, nsPath, addr string) *net.TCPListener {
	t.Helper()
	var l *net.TCPListener
	err := inNS(nsPath, func() (err error) {
		l, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sourceElements lists the anti-spoofing set.
func sourceElements(t *testing.T, n *Net) []nftables.SetElement {
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSetByName(n.table(), sourcesSet)
	if err != nil {
		t.Fatal(err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	return els
}
