package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const secretValue = "sk-e2e-9f8e7d6c5b4a-never-in-clear"

// TestSecretInjection: a sandbox holds only a placeholder; the proxy puts the
// real value into its HTTPS requests to the Secret's host (which the sandbox
// trusts with no flags), and blocks every way of sending the placeholder
// anywhere else. The value is found nowhere it must not be.
func TestSecretInjection(t *testing.T) {
	ca := newTestCA(t)
	d := startDaemon(t, "--dns-upstream", inetDNS+":53", "--upstream-ca", ca.Path)
	in := newInternet(t, d.netns, ca)
	probe := buildNetprobe(t)

	d.apply(`apiVersion: msb.dev/v1alpha1
kind: NetworkPolicy
metadata: {name: api}
spec:
  sandboxSelector: {matchLabels: {app: net}}
  egress: [{to: [{domain: api.test}, {domain: allowed.test}], ports: [{port: 80}, {port: 443}]}]
---
apiVersion: msb.dev/v1alpha1
kind: Secret
metadata: {name: llm}
spec:
  stringData: {apiKey: ` + secretValue + `}
  allowedHosts: [api.test]
  substituteIn: [headers, basicAuth]
`)
	vol := "  volumes: [{hostPath: " + probe + ", mountPath: /probe, readOnly: true}]\n  env: [{name: KEY, valueFrom: {secretKeyRef: {name: llm, key: apiKey}}}]\n"
	d.apply(strings.Replace(sandboxYAML("agent", vol, "sleep", "1000"), "app: e2e", "app: net", 1))
	d.must("wait", "sandbox/agent", "--for=condition=Ready", "--timeout=60s")

	sh := func(script string) string {
		t.Helper()
		out, _, _ := d.ctl("exec", "agent", "--", "sh", "-c", script)
		return strings.TrimSpace(out)
	}
	placeholder := sh(`printf %s "$KEY"`)
	if !strings.HasPrefix(placeholder, "msb-placeholder-") {
		t.Fatalf("the sandbox sees %q, want a placeholder", placeholder)
	}

	// Substitution: bearer header and basic auth arrive with the value, over
	// TLS the sandbox verifies against its ordinary trust store.
	if got := sh(`/probe/netprobe https api.test:443 api.test "Authorization: Bearer $KEY"`); !strings.Contains(got, "200 OK api ok") {
		t.Fatalf("HTTPS with the placeholder: %q", got)
	}
	basic := base64.StdEncoding.EncodeToString([]byte("user:" + placeholder))
	if got := sh(`/probe/netprobe https api.test:443 api.test "Authorization: Basic ` + basic + `"`); !strings.Contains(got, "200 OK") {
		t.Fatalf("HTTPS with basic auth: %q", got)
	}
	reqs := in.apiRequests()
	if len(reqs) != 2 || reqs[0].Authorization != "Bearer "+secretValue ||
		reqs[1].Authorization != "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+secretValue)) {
		t.Fatalf("api.test received %+v", reqs)
	}

	// Leaks: plain HTTP to the allowed host, the placeholder in a query,
	// base64 in a body, to another host; a Host that differs from SNI; a
	// DNS name. None reaches an upstream.
	before := len(in.apiRequests())
	// The control: the same request without the placeholder goes through.
	if got := sh(`/probe/netprobe post allowed.test:80 allowed.test x "X-Key: harmless"`); !strings.Contains(got, "hello from") {
		t.Fatalf("a request without the placeholder was refused: %q", got)
	}
	for what, script := range map[string]string{
		"plain HTTP to the allowed host": `/probe/netprobe post api.test:80 api.test x "Authorization: Bearer $KEY"`,
		"header to another host":         `/probe/netprobe post allowed.test:80 allowed.test x "X-Key: $KEY"`,
		"base64 body to another host":    `/probe/netprobe post allowed.test:80 allowed.test "$(printf %s "$KEY" | base64)"`,
		"Host differs from SNI":          `/probe/netprobe https api.test:443 allowed.test "Authorization: Bearer $KEY"`,
	} {
		if got := sh(script); strings.Contains(got, "200 OK") || strings.Contains(got, "hello from") {
			t.Errorf("%s: went through: %q", what, got)
		}
	}
	if got := sh(`/probe/netprobe dns "$KEY.allowed.test"`); strings.Contains(got, inetAllowed) {
		t.Errorf("DNS name with the placeholder answered: %q", got)
	}
	for _, q := range in.dnsQueries() {
		if strings.Contains(strings.ToLower(q), strings.TrimPrefix(placeholder, "msb-placeholder-")) {
			t.Errorf("the DNS upstream was asked %q", q)
		}
	}
	if n := len(in.apiRequests()); n != before {
		t.Errorf("api.test received %d requests from blocked leaks: %+v", n-before, in.apiRequests()[before:])
	}
	if out := d.must("describe", "sandbox", "agent"); !strings.Contains(out, "SecretLeakBlocked") {
		t.Errorf("no SecretLeakBlocked event:\n%s", out)
	}

	// Rotation applies to the running sandbox.
	d.apply(strings.Replace(`apiVersion: msb.dev/v1alpha1
kind: Secret
metadata: {name: llm}
spec:
  stringData: {apiKey: VALUE}
  allowedHosts: [api.test]
  substituteIn: [headers, basicAuth]
`, "VALUE", secretValue+"-rotated", 1))
	waitFor(t, 10*time.Second, "the rotated value to be sent", func() bool {
		sh(`/probe/netprobe https api.test:443 api.test "Authorization: Bearer $KEY"`)
		r := in.apiRequests()
		return len(r) > 0 && r[len(r)-1].Authorization == "Bearer "+secretValue+"-rotated"
	})

	// Never in clear: the sandbox, msbctl's output, msbd's log, the state dir.
	if got := sh(`cat /proc/self/environ /proc/1/environ 2>/dev/null | tr '\0' '\n'; env`); strings.Contains(got, "never-in-clear") {
		t.Errorf("the value is in the sandbox's environment")
	}
	for _, args := range [][]string{{"get", "secret", "llm", "-o", "yaml"}, {"describe", "secret", "llm"}, {"describe", "sandbox", "agent"},
		{"get", "events", "-o", "yaml"}, {"logs", "agent", "--network"}, {"get", "sandbox", "agent", "-o", "json"}} {
		if out, errOut, _ := d.ctl(args...); strings.Contains(out+errOut, "never-in-clear") {
			t.Errorf("msbctl %s prints the value", strings.Join(args, " "))
		}
	}
	if strings.Contains(d.logBuf.String(), "never-in-clear") {
		t.Errorf("msbd's log holds the value")
	}
	filepath.Walk(d.stateDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "never-in-clear") {
			t.Errorf("the value is in clear in %s", p)
		}
		return nil
	})
}
