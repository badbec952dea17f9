package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return addrPort(t, ln.Addr()).Port()
}

// sandboxServer stands in for a sandbox's port: it reads until EOF, then
// answers "got N bytes" and closes, which needs the half-close passed on.
func sandboxServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes", n)
			}()
		}
	}()
	return addrPort(t, ln.Addr())
}

func roundTrip(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestPublisher(t *testing.T) {
	base := runtime.NumGoroutine()
	sb := sandboxServer(t)
	const mark = 0x4d5342
	p := NewPublisher(mark, nil)
	marks := make(chan uint32, 10)
	p.onDial = func(c net.Conn) {
		m, err := socketMark(c)
		if err != nil {
			t.Error(err)
		}
		marks <- m
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := p.Publish("sb-1", "", port, sb); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish("sb-1", "", port, sb); err != nil {
		t.Fatalf("publishing again: %v", err)
	}
	got, err := roundTrip(addr)
	if errors.Is(err, syscall.EPERM) {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	if err != nil || got != "got 5 bytes" {
		t.Fatalf("%q, %v", got, err)
	}
	if m := <-marks; m != mark {
		t.Fatalf("SO_MARK %#x, want %#x", m, mark)
	}
	err = p.Publish("sb-2", "127.0.0.1", port, sb)
	if want := addr + " is already in use"; err == nil || err.Error() != want {
		t.Fatalf("taken port: %v, want %q", err, want)
	}

	// A connection open at Unpublish is closed with it.
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	<-marks
	p.Unpublish("sb-1")
	p.Unpublish("sb-1")
	if _, err := readAllBounded(held); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held connection: %v", err)
	}
	if _, err := roundTrip(addr); err == nil {
		t.Fatal("port still published")
	}
	p.Close()
	waitGoroutines(t, base+2) // the sandbox server's accept loop and cleanup
}
