package hostnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestNamespace checks what a sandbox finds in its namespace (lo and eth0,
// a default route via the host end, no IPv6) and the host end's sysctls.
func TestNamespace(t *testing.T) {
	enterHostNS(t)
	n := newNet(t, "msbtest_ns", "")
	a, err := n.Attach("inside")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range hostSysctls {
		key := fmt.Sprintf(s.key, a.HostVeth)
		if got := readSysctl(t, key); got != s.val {
			t.Errorf("%s = %s, want %s", key, got, s.val)
		}
	}
	err = inNS(a.NetNSPath, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
			if l.Attrs().Flags&net.FlagUp == 0 {
				return fmt.Errorf("%s is down", l.Attrs().Name)
			}
		}
		if strings.Join(names, ",") != "lo,eth0" {
			return fmt.Errorf("links %v", names)
		}
		addrs, err := netlink.AddrList(links[1], netlink.FAMILY_ALL)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != netip.PrefixFrom(a.IP, 30).String() {
			return fmt.Errorf("eth0 addresses %v %v", addrs, err)
		}
		routes, err := netlink.RouteGet(net.ParseIP("203.0.113.7"))
		if err != nil || len(routes) != 1 || !routes[0].Gw.Equal(a.HostIP.AsSlice()) {
			return fmt.Errorf("route to 203.0.113.7: %v %v", routes, err)
		}
		for _, k := range []string{"all", "default", "eth0"} {
			if got := readSysctl(t, "net/ipv6/conf/"+k+"/disable_ipv6"); got != "1" {
				return fmt.Errorf("%s disable_ipv6 = %s", k, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func readSysctl(t *testing.T, key string) string {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Error(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSandboxRootCannotReconfigure: root in a user namespace of its own,
// mapped to an unprivileged host uid as vmdriver/container does, has no
// CAP_NET_ADMIN over the namespace msbd made and cannot write its
// sysctls. (Mapped to host uid 0 it could still write the sysctls: the
// kernel lets the uid owning the files write them.)
func TestSandboxRootCannotReconfigure(t *testing.T) {
	enterHostNS(t)
	n := newNet(t, "msbtest_userns", "")
	a, err := n.Attach("userns")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "eth0", "down"},
		{"ip", "addr", "add", "172.29.200.2/32", "dev", "eth0"},
		{"sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6"},
	} {
		var out []byte
		err := inNS(a.NetNSPath, func() error { // the child inherits the namespace
			cmd := exec.Command(args[0], args[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER,
				Credential:  &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
				UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: sandboxHostID, Size: 1}},
				GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: sandboxHostID, Size: 1}}}
			var err error
			out, err = cmd.CombinedOutput()
			return err
		})
		if err == nil {
			t.Errorf("%v as root of a new user namespace succeeded: %s", args, out)
		}
	}
	if ok, _ := quietLinkState(a); !ok {
		t.Error("eth0 changed")
	}
}

// sandboxHostID is vmdriver/container's DefaultHostID.
const sandboxHostID = 2000000000

// quietLinkState reports whether eth0 is still up with only its address.
func quietLinkState(a Attachment) (bool, error) {
	var ok bool
	err := inNS(a.NetNSPath, func() error {
		l, err := netlink.LinkByName(sandboxIf)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		ok = err == nil && l.Attrs().Flags&net.FlagUp != 0 && len(addrs) == 1
		return err
	})
	return ok, err
}
