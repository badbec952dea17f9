package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"msb.dev/msb/images/imagetest"
)

// mcpSession starts `msbctl mcp` against d and connects the SDK's client to
// it over its real stdin and stdout.
func mcpSession(t testing.TB, d *daemon, args ...string) *mcp.ClientSession {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "msbctl"), append([]string{"mcp"}, args...)...)
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	cmd.Stderr = os.Stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "v0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// mcpLabelled gives an operator's sandbox manifest the MCP label, so the
// MCP tools may act on it.
func mcpLabelled(yaml string) string {
	return strings.Replace(yaml, "labels: {app: e2e}", `labels: {app: e2e, msb.dev/mcp: "true"}`, 1)
}

// mcpImage pushes busybox to a registry on d's loopback: MCP sandboxes use
// registry images only.
func mcpImage(t testing.TB, d *daemon) string {
	t.Helper()
	img, err := imagetest.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := newRegistry(t, d.netns).Push(t, "mcp/busybox:v1", img)
	return ref
}

// call calls a tool and decodes its structured result into out (if not nil).
// It returns the text content and whether the call was a tool error.
func call(t testing.TB, cs *mcp.ClientSession, tool string, args map[string]any, out any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", tool, err)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	if out != nil && !res.IsError {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: structured content %s: %v", tool, b, err)
		}
	}
	return text.String(), res.IsError
}

// TestMCPStdio drives `msbctl mcp` as an agent app would: over stdio with the
// SDK's client, against a real msbd.
func TestMCPStdio(t *testing.T) {
	d := startDaemon(t)
	image := mcpImage(t, d)
	cs := mcpSession(t, d, "--ttl", "1h", "--max-memory", "256Mi")
	ctx := context.Background()

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.Description == "" || tl.InputSchema == nil {
			t.Errorf("%s: no description or input schema", tl.Name)
		}
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "sandbox_create sandbox_delete sandbox_exec sandbox_list sandbox_logs sandbox_read_file sandbox_write_file" {
		t.Fatalf("tools: %s", got)
	}

	// create: an ordinary Sandbox afterwards, labelled, with the session's TTL.
	var created struct {
		Name  string `json:"name"`
		Ready bool   `json:"ready"`
	}
	if txt, isErr := call(t, cs, "sandbox_create", map[string]any{
		"name": "agent", "image": image,
		"command": []string{"sh", "-c", "echo booted; exec sleep 1000"},
		"env":     map[string]string{"GREETING": "hello"},
		"labels":  map[string]string{"tier": "trusted"},
	}, &created); isErr || created.Name != "agent" || !created.Ready {
		t.Fatalf("create: %v %q %+v", isErr, txt, created)
	}
	sb := d.sandbox("agent")
	if labels, _ := field(sb, "metadata.labels").(map[string]any); labels["msb.dev/mcp"] != "true" {
		t.Errorf("labels: %v", field(sb, "metadata.labels"))
	}
	if ttl := field(sb, "spec.lifecycle.ttl"); ttl != "1h0m0s" {
		t.Errorf("ttl %v, want the session's 1h", ttl)
	}
	if mem, disk := field(sb, "spec.resources.memory"), field(sb, "spec.resources.disk"); mem != "256Mi" || disk != "10Gi" {
		t.Errorf("memory %v, disk %v: want the session's caps 256Mi and 10Gi", mem, disk)
	}
	// An agent's label is its own, under mcp.msb.dev/: a NetworkPolicy the
	// operator writes later on "tier" does not select the sandbox.
	d.apply(`apiVersion: msb.dev/v1alpha1
kind: NetworkPolicy
metadata: {name: trusted}
spec:
  sandboxSelector: {matchLabels: {tier: trusted}}
  egress: [{to: [{domain: example.com}]}]
`)
	if labels, _ := field(d.sandbox("agent"), "metadata.labels").(map[string]any); labels["tier"] != nil || labels["mcp.msb.dev/tier"] != "trusted" {
		t.Errorf("labels %v: want tier only as mcp.msb.dev/tier", labels)
	}

	// exec: a shell string with stdin; an argv array; exit codes.
	var ex struct {
		ExitCode int    `json:"exitCode"`
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
		TimedOut bool   `json:"timedOut"`
	}
	call(t, cs, "sandbox_exec", map[string]any{"name": "agent", "command": "cat; echo $GREETING; echo oops >&2; exit 3", "stdin": "from-stdin\n"}, &ex)
	if ex.ExitCode != 3 || ex.Stdout != "from-stdin\nhello\n" || ex.Stderr != "oops\n" {
		t.Errorf("exec string: %+v", ex)
	}
	ex.Stdout = ""
	call(t, cs, "sandbox_exec", map[string]any{"name": "agent", "command": []string{"echo", "a b", "$HOME"}}, &ex)
	if ex.ExitCode != 0 || ex.Stdout != "a b $HOME\n" {
		t.Errorf("exec argv: %+v", ex)
	}
	call(t, cs, "sandbox_exec", map[string]any{"name": "agent", "command": "sleep 30", "timeoutSeconds": 1}, &ex)
	if !ex.TimedOut {
		t.Errorf("exec timeout: %+v", ex)
	}
	var big struct {
		Stdout          string `json:"stdout"`
		StdoutTruncated bool   `json:"stdoutTruncated"`
	}
	txt, _ := call(t, cs, "sandbox_exec", map[string]any{"name": "agent", "command": "head -c 3000000 /dev/zero | tr '\\0' x"}, &big)
	if !big.StdoutTruncated || len(big.Stdout) != 1<<20 || !strings.Contains(txt, "truncated") {
		t.Errorf("exec output bound: %d bytes, truncated %v", len(big.Stdout), big.StdoutTruncated)
	}

	// write then read, byte-exact: text, and binary through base64.
	bin := make([]byte, 3000)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	if txt, isErr := call(t, cs, "sandbox_write_file", map[string]any{"name": "agent", "path": "/tmp/bin.dat", "content": base64.StdEncoding.EncodeToString(bin), "encoding": "base64", "mode": "0600"}, nil); isErr {
		t.Fatalf("write binary: %s", txt)
	}
	if txt, isErr := call(t, cs, "sandbox_write_file", map[string]any{"name": "agent", "path": "/tmp/t.txt", "content": "line1\nünïcode\n"}, nil); isErr {
		t.Fatalf("write text: %s", txt)
	}
	var rf struct {
		Content  string `json:"content"`
		Encoding string `json:"encoding"`
		Mode     string `json:"mode"`
		Size     int64  `json:"size"`
	}
	call(t, cs, "sandbox_read_file", map[string]any{"name": "agent", "path": "/tmp/bin.dat"}, &rf)
	got, _ := base64.StdEncoding.DecodeString(rf.Content)
	if rf.Encoding != "base64" || !bytes.Equal(got, bin) || rf.Mode != "0600" {
		t.Errorf("read binary: encoding %s, %d bytes, mode %s", rf.Encoding, len(got), rf.Mode)
	}
	call(t, cs, "sandbox_read_file", map[string]any{"name": "agent", "path": "/tmp/t.txt"}, &rf)
	if rf.Encoding != "text" || rf.Content != "line1\nünïcode\n" {
		t.Errorf("read text: %+v", rf)
	}
	if txt, isErr := call(t, cs, "sandbox_read_file", map[string]any{"name": "agent", "path": "/tmp/nope"}, nil); !isErr || !strings.Contains(txt, "/tmp/nope") {
		t.Errorf("read missing file: error %v, %q", isErr, txt)
	}

	// logs, list.
	var lg struct {
		Logs string `json:"logs"`
	}
	call(t, cs, "sandbox_logs", map[string]any{"name": "agent", "tail": 5}, &lg)
	if lg.Logs != "booted\n" {
		t.Errorf("logs: %q", lg.Logs)
	}
	var ls struct {
		Sandboxes []struct {
			Name         string `json:"name"`
			CreatedByMCP bool   `json:"createdByMCP"`
		} `json:"sandboxes"`
	}
	call(t, cs, "sandbox_list", nil, &ls)
	if len(ls.Sandboxes) != 1 || ls.Sandboxes[0].Name != "agent" || !ls.Sandboxes[0].CreatedByMCP {
		t.Errorf("list: %+v", ls)
	}

	// Failures are tool errors, and the server keeps serving.
	if txt, isErr := call(t, cs, "sandbox_exec", map[string]any{"name": "missing", "command": "true"}, nil); !isErr || !strings.Contains(txt, `"missing" not found`) {
		t.Errorf("exec in a missing sandbox: error %v, %q", isErr, txt)
	}
	if txt, isErr := call(t, cs, "sandbox_create", map[string]any{"name": "bad", "image": strings.Replace(image, "mcp/busybox:v1", "mcp/missing:v1", 1)}, nil); !isErr || !strings.Contains(txt, "image") {
		t.Errorf("bad image: error %v, %q", isErr, txt)
	}
	if _, _, code := d.ctl("get", "sandbox", "bad"); code == 0 {
		t.Error("the sandbox of a bad image was left behind")
	}
	if txt, isErr := call(t, cs, "sandbox_create", map[string]any{"name": "agent", "image": image}, nil); !isErr || !strings.Contains(txt, "exists") {
		t.Errorf("create over an existing sandbox: error %v, %q", isErr, txt)
	}
	for _, c := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"image": image, "labels": map[string]string{"msb.dev/mcp": "false"}}, "plain name"},
		// Image forms that are paths on msbd's host (msbd is root).
		{map[string]any{"image": "oci:" + imageDir + ":latest"}, "path on the msbd host"},
		{map[string]any{"image": "docker-archive:/etc/shadow"}, "path on the msbd host"},
		{map[string]any{"image": image, "resources": map[string]any{"memory": "1000Gi"}}, "more than the operator allows"},
		{map[string]any{"image": image, "resources": map[string]any{"pids": 100000}}, "more than the operator allows"},
		{map[string]any{"image": image, "resources": map[string]any{"disk": "1Ti"}}, "more than the operator allows"},
	} {
		if txt, isErr := call(t, cs, "sandbox_create", c.args, nil); !isErr || !strings.Contains(txt, c.want) {
			t.Errorf("create %v: error %v, %q; want %q", c.args, isErr, txt, c.want)
		}
	}
	if out := d.must("get", "sb", "-o", "name"); strings.TrimSpace(out) != "sandbox/agent" {
		t.Errorf("sandboxes after refused creates: %q", out)
	}

	// delete: gone for msbd too.
	var del struct {
		Deleted bool `json:"deleted"`
	}
	call(t, cs, "sandbox_delete", map[string]any{"name": "agent"}, &del)
	if !del.Deleted {
		t.Error("delete did not finish")
	}
	if _, _, code := d.ctl("get", "sandbox", "agent"); code == 0 {
		t.Error("sandbox still there after sandbox_delete")
	}
	if _, isErr := call(t, cs, "sandbox_delete", map[string]any{"name": "agent"}, nil); !isErr {
		t.Error("deleting a missing sandbox is not a tool error")
	}

	// The operator's own sandboxes (host volumes, Secrets, policies of their
	// own) are out of the tools' reach unless the operator says otherwise.
	d.apply(sandboxYAML("ops", "", "sh", "-c", "echo operator-log; exec sleep 1000"))
	d.must("wait", "sandbox/ops", "--for=condition=Ready", "--timeout=60s")
	d.must("exec", "ops", "--", "sh", "-c", "echo operator-data > /tmp/secret.txt")
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"sandbox_exec", map[string]any{"name": "ops", "command": "cat /tmp/secret.txt"}},
		{"sandbox_read_file", map[string]any{"name": "ops", "path": "/tmp/secret.txt"}},
		{"sandbox_write_file", map[string]any{"name": "ops", "path": "/tmp/secret.txt", "content": "agent was here"}},
		{"sandbox_logs", map[string]any{"name": "ops"}},
		{"sandbox_delete", map[string]any{"name": "ops"}},
	} {
		if txt, isErr := call(t, cs, c.tool, c.args, nil); !isErr || !strings.Contains(txt, "not created through MCP") || strings.Contains(txt, "operator-") {
			t.Errorf("%s on the operator's sandbox: error %v, %q", c.tool, isErr, txt)
		}
	}
	if out := d.must("exec", "ops", "--", "cat", "/tmp/secret.txt"); out != "operator-data\n" {
		t.Errorf("the operator's file after refused MCP calls: %q", out)
	}
	ls.Sandboxes = nil
	call(t, cs, "sandbox_list", nil, &ls)
	if len(ls.Sandboxes) != 0 {
		t.Errorf("sandbox_list shows sandboxes MCP did not create: %+v", ls.Sandboxes)
	}
	all := mcpSession(t, d, "--all-sandboxes")
	if txt, isErr := call(t, all, "sandbox_exec", map[string]any{"name": "ops", "command": "cat /tmp/secret.txt"}, &ex); isErr || ex.Stdout != "operator-data\n" {
		t.Errorf("exec with --all-sandboxes: %v %q %+v", isErr, txt, ex)
	}
	call(t, all, "sandbox_list", nil, &ls)
	if len(ls.Sandboxes) != 1 || ls.Sandboxes[0].Name != "ops" {
		t.Errorf("sandbox_list with --all-sandboxes: %+v", ls.Sandboxes)
	}
}

// bearerTransport adds the Authorization header to every request.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

// TestMCPStreamableHTTP: msbd --mcp-listen serves the same tools over
// streamable HTTP, only to a client with the token; it refuses to start
// without a token file or on a non-loopback address.
func TestMCPStreamableHTTP(t *testing.T) {
	requireRoot(t)
	// Refusals come before msbd touches anything.
	tmp := t.TempDir()
	tokenFile := filepath.Join(tmp, "token")
	os.WriteFile(tokenFile, []byte("e2e-token-0123456789abcdef\n"), 0o600)
	openToken := filepath.Join(tmp, "open-token")
	os.WriteFile(openToken, []byte("e2e-token-0123456789abcdef\n"), 0o644)
	os.Chmod(openToken, 0o644) // whatever the umask
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mcp-listen", "127.0.0.1:18765"}, "--mcp-token-file"},
		{[]string{"--mcp-listen", "0.0.0.0:18765", "--mcp-token-file", tokenFile}, "not a loopback address"},
		{[]string{"--mcp-listen", "127.0.0.1:18765", "--mcp-token-file", filepath.Join(tmp, "missing")}, "no such file"},
		{[]string{"--mcp-listen", "127.0.0.1:18765", "--mcp-token-file", openToken}, "chmod 600"},
		{[]string{"--mcp-listen", "127.0.0.1:18765", "--mcp-token-file", tokenFile, "--mcp-max-memory", "lots"}, "--mcp-max-memory"},
	} {
		out, err := exec.Command(filepath.Join(binDir, "msbd"), append([]string{"--state-dir", filepath.Join(tmp, "state"), "--socket", filepath.Join(tmp, "s")}, c.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("msbd %v: %v, %q; want a refusal mentioning %q", c.args, err, out, c.want)
		}
		if _, err := os.Stat(filepath.Join(tmp, "state")); err == nil {
			t.Errorf("msbd %v made its state dir before refusing", c.args)
		}
	}

	const addr = "127.0.0.1:18765" // in the daemon's own network namespace
	d := startDaemon(t, "--mcp-listen", addr, "--mcp-token-file", tokenFile)
	d.apply(mcpLabelled(sandboxYAML("h", "", "sleep", "1000")))
	d.apply(sandboxYAML("ops", "", "sleep", "1000"))
	d.must("wait", "sandbox/h", "--for=condition=Ready", "--timeout=60s")
	connect := func(token string) (*mcp.ClientSession, error) {
		hc := &http.Client{Transport: bearerTransport{token: token, base: &http.Transport{DialContext: netnsDialer(d.netns)}}}
		c := mcp.NewClient(&mcp.Implementation{Name: "e2e-http", Version: "v0"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "http://" + addr + "/", HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
	}
	for _, tok := range []string{"", "wrong-token-0123456789"} {
		if cs, err := connect(tok); err == nil {
			cs.Close()
			t.Errorf("token %q: connected", tok)
		} else if !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("token %q: %v, want 401 Unauthorized", tok, err)
		}
	}
	cs, err := connect("e2e-token-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var ex struct {
		ExitCode int    `json:"exitCode"`
		Stdout   string `json:"stdout"`
	}
	if txt, isErr := call(t, cs, "sandbox_exec", map[string]any{"name": "h", "command": "echo over-http; exit 7"}, &ex); isErr || ex.ExitCode != 7 || ex.Stdout != "over-http\n" {
		t.Errorf("exec over HTTP: %v %q %+v", isErr, txt, ex)
	}
	if txt, isErr := call(t, cs, "sandbox_exec", map[string]any{"name": "ops", "command": "true"}, nil); !isErr || !strings.Contains(txt, "not created through MCP") {
		t.Errorf("exec over HTTP in the operator's sandbox: %v %q", isErr, txt)
	}

	// With the right token, a request a browser would send after DNS
	// rebinding (a foreign Host) or from a foreign page (Origin) is refused.
	hc := &http.Client{Transport: &http.Transport{DialContext: netnsDialer(d.netns)}}
	for _, c := range []struct{ host, origin string }{{"evil.example:18765", ""}, {addr, "https://evil.example"}} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Host = c.host
		req.Header.Set("Authorization", "Bearer e2e-token-0123456789abcdef")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Host %q, Origin %q: %s, want 403", c.host, c.origin, resp.Status)
		}
	}
}
