package mcpserver

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// fakeAPI is a recording stand-in for msbd's API on a unix socket: it knows
// a few Sandboxes (GET), lists no NetworkPolicies, and answers every other
// request 500 after recording it, so a test sees exactly what a tool asked
// msbd to do.
type fakeAPI struct {
	mu        sync.Mutex
	sandboxes map[string]map[string]string // name -> labels
	reqs      []string                     // "METHOD PATH?QUERY"
	created   *v1alpha1.Sandbox            // the last POSTed Sandbox
}

func newFakeAPI(t *testing.T, sandboxes map[string]map[string]string) (*fakeAPI, *client.Client) {
	f := &fakeAPI{sandboxes: sandboxes}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: f}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return f, client.New(sock)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI())
	const sbs = "/apis/" + v1alpha1.APIVersion + "/namespaces/default/sandboxes"
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, sbs+"/"):
		name := strings.TrimPrefix(r.URL.Path, sbs+"/")
		labels, ok := f.sandboxes[name]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":404,"reason":"NotFound","message":"sandbox not found"}`)
			return
		}
		json.NewEncoder(w).Encode(&v1alpha1.Sandbox{
			TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
			Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
			Spec:     v1alpha1.SandboxSpec{Image: "alpine"},
		})
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/networkpolicies"):
		io.WriteString(w, `{"apiVersion":"`+v1alpha1.APIVersion+`","kind":"NetworkPolicyList","metadata":{},"items":[]}`)
	default:
		if r.Method == http.MethodPost && r.URL.Path == sbs {
			f.created = &v1alpha1.Sandbox{}
			json.NewDecoder(r.Body).Decode(f.created)
		}
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"code":500,"reason":"InternalError","message":"fake msbd does not do that"}`)
	}
}

// requests returns what was asked since the last call.
func (f *fakeAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

func connect(t *testing.T, o Options) *mcp.ClientSession {
	st, ct := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := New(o).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "v0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String(), res.IsError
}

// TestToolsOnlyTouchMCPSandboxes: exec, files, logs and delete refuse a
// sandbox without msb.dev/mcp=true before asking msbd for anything but the
// sandbox itself; --all-sandboxes lets them through; sandbox_list asks
// only for MCP sandboxes.
func TestToolsOnlyTouchMCPSandboxes(t *testing.T) {
	api, c := newFakeAPI(t, map[string]map[string]string{
		"ops":   {"app": "db"},
		"agent": {LabelCreatedBy: "true"},
	})
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"sandbox_exec", map[string]any{"command": "id"}},
		{"sandbox_write_file", map[string]any{"path": "/tmp/x", "content": "x"}},
		{"sandbox_read_file", map[string]any{"path": "/etc/shadow"}},
		{"sandbox_logs", map[string]any{}},
		{"sandbox_delete", map[string]any{}},
	}
	cs := connect(t, Options{Client: c})
	for _, k := range calls {
		k.args["name"] = "ops"
		txt, isErr := callTool(t, cs, k.tool, k.args)
		if !isErr || !strings.Contains(txt, "not created through MCP") || !strings.Contains(txt, "--all-sandboxes") {
			t.Errorf("%s on an operator sandbox: error %v, %q", k.tool, isErr, txt)
		}
		if got := api.requests(); len(got) != 1 || !strings.HasPrefix(got[0], "GET ") {
			t.Errorf("%s on an operator sandbox asked msbd: %q", k.tool, got)
		}
		// An MCP sandbox goes through to msbd (which, here, fails).
		k.args["name"] = "agent"
		callTool(t, cs, k.tool, k.args)
		if got := api.requests(); len(got) < 2 {
			t.Errorf("%s on an MCP sandbox: only %q", k.tool, got)
		}
	}
	callTool(t, cs, "sandbox_list", map[string]any{})
	if got := api.requests(); len(got) != 1 || !strings.Contains(got[0], "labelSelector=msb.dev%2Fmcp%3Dtrue") {
		t.Errorf("sandbox_list asked %q, want only MCP sandboxes", got)
	}

	all := connect(t, Options{Client: c, AllSandboxes: true})
	for _, k := range calls {
		k.args["name"] = "ops"
		if txt, _ := callTool(t, all, k.tool, k.args); strings.Contains(txt, "not created through MCP") {
			t.Errorf("%s with AllSandboxes: %q", k.tool, txt)
		}
		if got := api.requests(); len(got) == 0 {
			t.Errorf("%s with AllSandboxes did not reach msbd", k.tool)
		}
	}
	callTool(t, all, "sandbox_list", map[string]any{})
	if got := api.requests(); len(got) != 1 || strings.Contains(got[0], "labelSelector") {
		t.Errorf("sandbox_list with AllSandboxes asked %q", got)
	}
}

// TestCreateRefusesHostPathImages: oci:, oci-archive: and docker-archive:
// name files on msbd's host; sandbox_create refuses them without asking msbd.
func TestCreateRefusesHostPathImages(t *testing.T) {
	api, c := newFakeAPI(t, nil)
	cs := connect(t, Options{Client: c})
	for _, img := range []string{"oci:/root/layout:latest", "oci-archive:/root/x.tar", "docker-archive:/dev/zero", "OCI:/etc", " oci:/x"} {
		txt, isErr := callTool(t, cs, "sandbox_create", map[string]any{"image": img})
		if !isErr || !strings.Contains(txt, "path on the msbd host") {
			t.Errorf("image %q: error %v, %q", img, isErr, txt)
		}
		if got := api.requests(); len(got) != 0 {
			t.Errorf("image %q: msbd was asked %q", img, got)
		}
	}
	for _, img := range []string{"alpine:3.20", "127.0.0.1:5000/team/tool:v1", "docker://alpine"} {
		if err := checkImage(img); err != nil {
			t.Errorf("%s: %v", img, err)
		}
	}
}

// TestCreateLabelsAndCaps: client labels are stored under mcp.msb.dev/, so
// a NetworkPolicy written later on "tier" cannot select the sandbox;
// resources above the caps are refused and absent ones get the caps.
func TestCreateLabelsAndCaps(t *testing.T) {
	api, c := newFakeAPI(t, nil)
	cs := connect(t, Options{Client: c, Limits: Limits{Memory: "1Gi", CPUs: "1", PIDs: 100, Disk: "1Gi"}})
	callTool(t, cs, "sandbox_create", map[string]any{"name": "a", "image": "alpine", "labels": map[string]string{"tier": "trusted"}})
	sb := api.created
	if sb == nil {
		t.Fatalf("nothing created: %q", api.requests())
	}
	want := map[string]string{LabelCreatedBy: "true", "mcp.msb.dev/tier": "trusted"}
	if len(sb.Metadata.Labels) != 2 || sb.Metadata.Labels["mcp.msb.dev/tier"] != "trusted" || sb.Metadata.Labels[LabelCreatedBy] != "true" {
		t.Errorf("labels %v, want %v", sb.Metadata.Labels, want)
	}
	if r := sb.Spec.Resources; r.Memory != "1Gi" || r.CPUs != "1" || r.PIDs != 100 || r.Disk != "1Gi" {
		t.Errorf("resources without a request: %+v, want the caps", r)
	}
	for _, lbl := range []string{"msb.dev/mcp", "example.com/app"} {
		if txt, isErr := callTool(t, cs, "sandbox_create", map[string]any{"image": "alpine", "labels": map[string]string{lbl: "x"}}); !isErr || !strings.Contains(txt, "plain name") {
			t.Errorf("label %q: error %v, %q", lbl, isErr, txt)
		}
	}
	api.created = nil
	for _, r := range []map[string]any{{"memory": "1000Gi"}, {"memory": "1025Mi"}, {"cpus": "1.5"}, {"pids": 101}, {"memory": "0"}, {"disk": "0"}, {"disk": "2Gi"}, {"pids": -1}, {"cpus": "lots"}} {
		if txt, isErr := callTool(t, cs, "sandbox_create", map[string]any{"image": "alpine", "resources": r}); !isErr || !strings.Contains(txt, "resources.") {
			t.Errorf("resources %v: error %v, %q", r, isErr, txt)
		}
	}
	if api.created != nil {
		t.Errorf("a create over the caps reached msbd: %+v", api.created.Spec.Resources)
	}
	callTool(t, cs, "sandbox_create", map[string]any{"image": "alpine", "resources": map[string]any{"memory": "512Mi", "pids": 50, "disk": "100Mi"}})
	if r := api.created.Spec.Resources; r.Memory != "512Mi" || r.CPUs != "1" || r.PIDs != 50 || r.Disk != "100Mi" {
		t.Errorf("resources within the caps: %+v", r)
	}
	if err := (Limits{Memory: "lots"}).Validate("mcp-max-"); err == nil || !strings.Contains(err.Error(), "--mcp-max-memory") {
		t.Errorf("bad cap: %v", err)
	}
}
