package agent

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestListenVsock: the agent's vsock listener binds and listens on the
// host's vsock too, and Close ends a blocked Accept with net.ErrClosed, as
// Server.Serve expects. (A connection needs a guest or vsock_loopback.)
func TestListenVsock(t *testing.T) {
	l, err := Listen{VsockPort: 0x4d5342}.listen("")
	if err != nil {
		t.Skipf("no vsock on this host: %v", err)
	}
	if l.Addr().Network() != "vsock" || l.Addr().String() != "vsock:5067586" {
		t.Errorf("addr %s %s", l.Addr().Network(), l.Addr())
	}
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still blocked 10s after Close")
	}
}
