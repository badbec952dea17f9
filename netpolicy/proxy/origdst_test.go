package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOriginalDst runs a real nftables redirect in a network namespace
// the test creates on one locked OS thread (gone with the thread): a
// connection to 127.0.0.5:9 lands on the proxy's listener, and
// OriginalDst reads 127.0.0.5:9 back from conntrack.
func TestOriginalDst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and nftables")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	type result struct {
		got netip.AddrPort
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its netns
		fail := func(err error) { done <- result{err: err} }
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fail(err)
			return
		}
		// Children forked from this thread inherit its network namespace.
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fail(fmt.Errorf("ip: %v: %s", err, out))
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
			return
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		rules := fmt.Sprintf(`table ip msbproxytest {
	chain out { type nat hook output priority -100; ip daddr 127.0.0.5 tcp dport 9 redirect to :%d; }
}`, port)
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			fail(fmt.Errorf("nft: %v: %s", err, out))
			return
		}
		c, err := net.DialTimeout("tcp", "127.0.0.5:9", 5*time.Second)
		if err != nil {
			fail(err)
			return
		}
		defer c.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		s, err := ln.Accept()
		if err != nil {
			fail(err)
			return
		}
		defer s.Close()
		got, err := OriginalDst(s.(*net.TCPConn))
		done <- result{got, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := netip.MustParseAddrPort("127.0.0.5:9"); r.got != want {
		t.Fatalf("OriginalDst %v, want %v", r.got, want)
	}
}
