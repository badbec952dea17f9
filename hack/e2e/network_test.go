package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildNetprobe builds testdata/netprobe, static, into a directory a
// sandbox mounts read-only at /probe.
func buildNetprobe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	root, _ := filepath.Abs("../..")
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "netprobe"), "./hack/e2e/testdata/netprobe")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building netprobe: %v\n%s", err, out)
	}
	return dir
}

const netPolicyYAML = `apiVersion: msb.dev/v1alpha1
kind: NetworkPolicy
metadata: {name: web}
spec:
  sandboxSelector: {matchLabels: {app: net}}
  egress:
    - to: [{domain: allowed.test}, {domain: rebind.test}, {domain: meta.test}%s]
      ports: [{port: 80}, {port: 443}]
`

// TestNetworkPolicyEnforced runs msbd in a namespace whose only way out is
// the test's internet and checks, from inside sandboxes, that a sandbox
// reaches exactly what its NetworkPolicy allows.
func TestNetworkPolicyEnforced(t *testing.T) {
	d := startDaemon(t, "--dns-upstream", inetDNS+":53")
	newInternet(t, d.netns, nil)
	probe := buildNetprobe(t)
	hostService := listenCounting(t, d.netns, "0.0.0.0:2222")

	d.apply(strings.Replace(netPolicyYAML, "%s", "", 1))
	vol := "  volumes: [{hostPath: " + probe + ", mountPath: /probe, readOnly: true}]\n"
	d.apply(strings.Replace(sandboxYAML("net", vol+"  ports: [{containerPort: 8080, hostPort: 18080}]\n", "httpd", "-f", "-p", "8080", "-h", "/probe"), "app: e2e", "app: net", 1))
	d.apply(sandboxYAML("lonely", vol, "sh", "-c", "echo lonely > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"))
	d.must("wait", "sandbox/net", "sandbox/lonely", "--for=condition=Ready", "--timeout=60s")
	lonelyIP, _ := field(d.sandbox("lonely"), "status.ip").(string)
	gateway := strings.TrimSuffix(lonelyIP, ".2") + ".1"
	if lonelyIP == "" {
		t.Fatalf("sandbox lonely has no status.ip")
	}

	run := func(sb string, args ...string) string {
		t.Helper()
		out, _, _ := d.ctl(append([]string{"exec", sb, "--", "/probe/netprobe"}, args...)...)
		return strings.TrimSpace(out)
	}
	expect := func(what, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Errorf("%s: got %q, want it to contain %q", what, got, want)
		}
	}

	// Allowed: the name resolves, HTTP and HTTPS (passed through: the
	// upstream's own certificate) work.
	expect("allowed name", run("net", "dns", "allowed.test"), inetAllowed)
	expect("allowed HTTP", run("net", "http", "allowed.test:80", "allowed.test"), "hello from "+inetAllowed+":80 host allowed.test")
	expect("allowed HTTPS", run("net", "tls", "allowed.test:443", "allowed.test"), "CN=allowed.test hello from "+inetAllowed+":443")
	// Denied: another name; a direct connection to an address no rule
	// allows; the allowed SNI or Host towards an address not pinned to it;
	// a Host other than the allowed name.
	expect("denied name", run("net", "dns", "other.test"), "NXDOMAIN")
	expect("direct address", run("net", "http", inetOther+":80", inetOther), "ERROR")
	expect("allowed SNI, unpinned address", run("net", "tls", inetOther+":443", "allowed.test"), "ERROR")
	expect("allowed Host, unpinned address", run("net", "http", inetOther+":80", "allowed.test"), "ERROR")
	expect("other Host to a pinned address", run("net", "http", inetAllowed+":80", "other.test"), "ERROR")
	// Rebinding and metadata answers are refused even for allowed names.
	expect("rebinding", run("net", "dns", "rebind.test"), "NXDOMAIN")
	expect("metadata", run("net", "dns", "meta.test"), "NXDOMAIN")
	expect("metadata address", run("net", "http", inetMetadata+":80", "meta.test"), "ERROR")
	// Nothing else: UDP, the host's services, other sandboxes.
	expect("UDP echo", run("net", "udp", inetAllowed+":7"), "ERROR")
	expect("host service", run("net", "http", gateway+":2222", gateway), "ERROR")
	expect("other sandbox", run("net", "http", lonelyIP+":8080", "lonely"), "ERROR")
	if n := hostService.Load(); n != 0 {
		t.Errorf("the host's service on :2222 accepted %d connections from sandboxes", n)
	}
	// An address msbd's namespace gains later is the host's, never
	// "private": a policy opening private addresses reaches the private
	// stand-in but not a host service on that new address.
	d.apply(`apiVersion: msb.dev/v1alpha1
kind: NetworkPolicy
metadata: {name: private}
spec:
  sandboxSelector: {matchLabels: {app: net}}
  egress: [{to: [{group: private}], ports: [{port: 80}, {port: 2222}]}]
`)
	mustRun(t, "ip", "-n", d.netns, "link", "add", "e2elate0", "type", "veth", "peer", "name", "e2elate1")
	mustRun(t, "ip", "-n", d.netns, "addr", "add", "10.99.0.1/24", "dev", "e2elate0")
	waitFor(t, 10*time.Second, "the private policy to apply", func() bool {
		return strings.Contains(run("net", "http", inetPrivate+":80", inetPrivate), "hello from "+inetPrivate)
	})
	expect("host service on a late address", run("net", "http", "10.99.0.1:2222", "10.99.0.1"), "ERROR")
	if n := hostService.Load(); n != 0 {
		t.Errorf("the host's service on :2222 accepted %d connections from sandboxes", n)
	}
	d.must("delete", "networkpolicy", "private")

	// A sandbox no policy selects reaches nothing.
	expect("no policy: name", run("lonely", "dns", "allowed.test"), "NXDOMAIN")
	expect("no policy: address", run("lonely", "http", inetAllowed+":80", "allowed.test"), "ERROR")

	// A published port answers on msbd's 127.0.0.1.
	client := &http.Client{Transport: &http.Transport{DialContext: netnsDialer(d.netns)}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://127.0.0.1:18080/netprobe")
	if err != nil {
		t.Errorf("published port: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("published port: %s", resp.Status)
		}
	}

	// A policy change applies to the running sandbox, without a restart.
	started := field(d.sandbox("net"), "status.startedAt")
	d.apply(strings.Replace(netPolicyYAML, "%s", ", {domain: other.test}", 1))
	waitFor(t, 10*time.Second, "the policy change to apply", func() bool {
		return strings.Contains(run("net", "dns", "other.test"), inetOther)
	})
	expect("newly allowed HTTP", run("net", "http", "other.test:80", "other.test"), "hello from "+inetOther+":80")
	if got := field(d.sandbox("net"), "status.startedAt"); got != started {
		t.Errorf("the sandbox restarted for a policy change (startedAt %v → %v)", started, got)
	}

	// Every decision is visible.
	log := d.must("logs", "net", "--network")
	t.Logf("network log of sandbox net:\n%s", log)
	for _, want := range []string{"ALLOW dns  allowed.test", "DENY  dns  other.test", "DENY  tcp"} {
		if !strings.Contains(log, want) {
			t.Errorf("network log lacks %q:\n%s", want, log)
		}
	}
	if out := d.must("describe", "sandbox", "net"); !strings.Contains(out, "Network Policies:     web") || !strings.Contains(out, "EgressDenied") {
		t.Errorf("describe does not list the policy or the denials:\n%s", out)
	}
	if out := d.must("get", "networkpolicies"); !strings.Contains(out, "web") || !strings.Contains(out, " 1 ") {
		t.Errorf("get networkpolicies does not count the selected sandbox:\n%s", out)
	}

	// After a crash of msbd the running sandbox keeps its address and,
	// once msbd is back, its rules.
	d.kill9()
	d.start()
	waitFor(t, 20*time.Second, "the network after an msbd restart", func() bool {
		return strings.Contains(run("net", "http", "allowed.test:80", "allowed.test"), "hello from "+inetAllowed)
	})
	expect("denied after a restart", run("net", "dns", "unknown.test"), "NXDOMAIN")
	if got := field(d.sandbox("net"), "status.startedAt"); got != started {
		t.Errorf("the sandbox restarted with msbd (startedAt %v → %v)", started, got)
	}

	// Deleting everything leaves no link, namespace or rule behind.
	d.must("delete", "sandboxes", "--all", "--wait", "--timeout=60s")
	links := mustRun(t, "ip", "-n", d.netns, "-o", "link")
	if strings.Contains(links, ": msb") {
		t.Errorf("links left after deleting every sandbox:\n%s", links)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", d.netns, "nft", "list", "set", "inet", "msb", "sources").CombinedOutput(); err != nil || strings.Contains(string(out), "172.") {
		t.Errorf("nft set still holds sandbox addresses (%v):\n%s", err, out)
	}
}
