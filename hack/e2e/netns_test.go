package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Every msbd of this suite runs in a network namespace of its own (as
// ../shared/TESTING.md asks): its nftables table, veths and published ports
// never touch the machine's namespace, two daemons never collide, and even
// a bug cannot send a packet off the machine. Only the network namespace
// changes (nsenter --net), so the state dir, the API socket and runc are
// shared with the test as before.

// newNetns makes a network namespace with lo up; it is deleted at cleanup.
func newNetns(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	// The test process's pid is part of the name, so a later run can remove
	// what a run killed before its cleanups left (sweepDeadNetns).
	name := fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// sweepDeadNetns deletes network namespaces named by newNetns for a test
// process that no longer runs (a run killed by -timeout or a signal never
// reaches its t.Cleanup). Namespaces of live runs are left alone.
func sweepDeadNetns(prefixes ...string) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		for _, p := range prefixes {
			rest, ok := strings.CutPrefix(e.Name(), p)
			if !ok {
				continue
			}
			pidText, _, ok := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidText)
			if !ok || err != nil || pid <= 0 {
				continue
			}
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				exec.Command("ip", "netns", "delete", e.Name()).Run()
			}
		}
	}
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs fn on an OS thread inside network namespace ns: sockets fn
// opens stay in ns after it returns, and serve from any goroutine.
func inNetns(t testing.TB, ns string, fn func()) {
	t.Helper()
	if err := withNetns(ns, fn); err != nil {
		t.Fatalf("entering network namespace %s: %v", ns, err)
	}
}

func withNetns(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err // the thread stays locked and dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// netnsDialer dials from inside network namespace ns (the socket is made
// there; the connection then works from anywhere).
func netnsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var derr error
		if err := withNetns(ns, func() { c, derr = (&net.Dialer{}).DialContext(ctx, network, addr) }); err != nil {
			return nil, err
		}
		return c, derr
	}
}
