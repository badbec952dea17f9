package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a REDIRECTed (or DNATed) IPv4
// connection was addressed to before nftables sent it to the proxy, from
// conntrack via getsockopt(SOL_IP, SO_ORIGINAL_DST). The kernel fills a
// struct sockaddr_in; x/sys has no typed getter for it, so it is read
// through the 16-byte IPv6Mreq getter, which has the same size.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		mreq *unix.IPv6Mreq
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, gerr
	}
	sa := mreq.Multiaddr // sockaddr_in: family(2, host order), port(2, BE), addr(4)
	if fam := binary.NativeEndian.Uint16(sa[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST: not an IPv4 address")
	}
	addr := netip.AddrFrom4([4]byte(sa[4:8]))
	return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(sa[2:4])), nil
}

// tcpQuiet reports how long ago c last received or sent data, from
// TCP_INFO (tcpi_last_data_recv / tcpi_last_data_sent, milliseconds).
func tcpQuiet(c net.Conn) (time.Duration, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var (
		info *unix.TCPInfo
		ierr error
	)
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, true
}

// markControl returns a net.Dialer Control func that sets SO_MARK on the
// socket before it connects (needs CAP_NET_ADMIN); mark 0 sets nothing.
func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}
}

// socketMark reads SO_MARK of c (tests check published connections).
func socketMark(c net.Conn) (uint32, error) {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		v    int
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err != nil {
		return 0, err
	}
	return uint32(v), gerr
}
