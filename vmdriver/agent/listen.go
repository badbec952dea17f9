package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen says where the agent serves its protocol. The zero value is the
// container's: a unix socket in the shared directory (SocketFile).
type Listen struct {
	// VsockPort, when not 0, makes the agent listen on this vsock port of
	// any CID: in a microVM, where libkrun maps the port to a unix socket on
	// the host.
	VsockPort uint32
	// FD, when above 2, is an inherited listening socket to serve on
	// (socket activation; the libkrun stand-in of msb's tests hands the
	// agent the socket its vsock mapping names this way).
	FD int
}

func (l Listen) listen(sock string) (net.Listener, error) {
	switch {
	case l.VsockPort != 0:
		return listenVsock(l.VsockPort)
	case l.FD > 2:
		f := os.NewFile(uintptr(l.FD), "listen-fd")
		defer f.Close()
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("listen fd %d: %w", l.FD, err)
		}
		return ln, nil
	}
	return listenUnix(sock)
}

// listenVsock listens on port of any CID. The net package knows no vsock,
// so the listener accepts through Go's poller on the raw descriptor.
func listenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	f := os.NewFile(uintptr(fd), "vsock")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &vsockListener{f: f, rc: rc, port: port}, nil
}

type vsockListener struct {
	f      *os.File
	rc     syscall.RawConn
	port   uint32
	closed atomic.Bool
}

func (l *vsockListener) Accept() (net.Conn, error) {
	var nfd int
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		// The poller says "use of closed file", which is not os.ErrClosed.
		if l.closed.Load() || errors.Is(err, os.ErrClosed) {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	return &vsockConn{File: os.NewFile(uintptr(nfd), "vsock-conn"), port: l.port}, nil
}

func (l *vsockListener) Close() error   { l.closed.Store(true); return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return vsockAddr(l.port) }

// vsockConn is an accepted vsock connection; os.File gives it reads,
// writes and deadlines through the poller.
type vsockConn struct {
	*os.File
	port uint32
}

func (c *vsockConn) LocalAddr() net.Addr  { return vsockAddr(c.port) }
func (c *vsockConn) RemoteAddr() net.Addr { return vsockAddr(0) }

type vsockAddr uint32

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("vsock:%d", uint32(a)) }

// guestLoopbackUp brings lo up in a microVM guest, where the agent is root
// of its own kernel (in a container the host does it: the sandbox has no
// CAP_NET_ADMIN). Errors are not fatal: TSI carries the guest's sockets
// either way, and the main command's wait for lo ends after its timeout.
func guestLoopbackUp() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil || unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr) != nil {
		return
	}
	if ifr.Uint16()&unix.IFF_UP == 0 {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
}
