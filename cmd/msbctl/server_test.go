package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/store/storetest"
)

// newServer serves the real API over a real store on a unix socket and
// returns the socket path and a client of it. No reconciler runs: tests set
// status themselves where they need it.
func newServer(t *testing.T) (string, *client.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "msbctl-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := storetest.Open(t)
	sock := filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: st, Runtime: notRunning{}, Version: v1alpha1.VersionInfo{Version: "test", Driver: "fake"}})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, client.New(sock)
}

// notRunning is a runtime where no sandbox ever runs.
type notRunning struct{}

func (notRunning) AgentSocket(sb *v1alpha1.Sandbox) (string, error) {
	return "", fmt.Errorf("sandbox %q is not running", sb.Metadata.Name)
}

func (notRunning) LogDir(sb *v1alpha1.Sandbox) (string, error) {
	return "", fmt.Errorf("sandbox %q has no logs yet", sb.Metadata.Name)
}

// cli runs msbctl against sock in-process.
func cli(t *testing.T, sock string, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, append([]string{"--socket", sock}, args...)...)
}

func writeManifest(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func setReady(t *testing.T, c *client.Client, name string, status v1alpha1.ConditionStatus, phase v1alpha1.SandboxPhase) {
	t.Helper()
	ctx := context.Background()
	obj, err := c.Get(ctx, v1alpha1.KindSandbox, "default", name)
	if err != nil {
		t.Error(err)
		return
	}
	sb := obj.(*v1alpha1.Sandbox)
	sb.Status.Phase = phase
	v1alpha1.SetCondition(&sb.Status.Conditions, v1alpha1.Condition{Type: v1alpha1.ConditionReady, Status: status, Reason: "Test", LastTransitionTime: time.Now()})
	if _, err := c.UpdateStatus(ctx, sb); err != nil {
		t.Error(err)
	}
}

func TestAgainstServer(t *testing.T) {
	sock, c := newServer(t)
	good := "testdata/good.yaml"

	t.Run("version", func(t *testing.T) {
		code, out, errs := cli(t, sock, "version")
		if code != exitOK || !strings.Contains(out, "Server Version: test") {
			t.Errorf("exit %d: %s%s", code, out, errs)
		}
	})

	t.Run("apply", func(t *testing.T) {
		code, out, errs := cli(t, sock, "apply", "-f", good, "--dry-run=server")
		if want := "secret/openai created (server dry run)\nsandbox/web created (server dry run)\n"; code != exitOK || out != want {
			t.Fatalf("server dry run: exit %d, %q %s; want %q", code, out, errs, want)
		}
		code, out, errs = cli(t, sock, "apply", "-f", good)
		if want := "secret/openai created\nsandbox/web created\n"; code != exitOK || out != want {
			t.Fatalf("apply: exit %d, %q %s; want %q", code, out, errs, want)
		}
		code, out, _ = cli(t, sock, "apply", "-f", good)
		if want := "secret/openai unchanged\nsandbox/web unchanged\n"; code != exitOK || out != want {
			t.Errorf("re-apply: exit %d, %q; want %q", code, out, want)
		}
		code, out, _ = cli(t, sock, "apply", "-f", good, "--dry-run=client")
		if want := "secret/openai configured (dry run)\nsandbox/web configured (dry run)\n"; code != exitOK || out != want {
			t.Errorf("client dry run: exit %d, %q; want %q", code, out, want)
		}
		// An invalid manifest writes nothing, even next to valid ones.
		code, _, errs = cli(t, sock, "apply", "-f", "testdata/bad.yaml")
		if code != exitFail || !strings.Contains(errs, "testdata/bad.yaml:5: spec.image") {
			t.Errorf("bad apply: exit %d, %s", code, errs)
		}
		if _, err := c.Get(context.Background(), v1alpha1.KindSandbox, "default", "fine"); !client.IsNotFound(err) {
			t.Errorf("sandbox/fine of an invalid apply: %v, want not found", err)
		}
	})

	t.Run("get", func(t *testing.T) {
		code, out, errs := cli(t, sock, "get", "sb")
		if code != exitOK || !strings.HasPrefix(out, "NAME ") || !strings.Contains(out, "\nweb ") {
			t.Errorf("get sb: exit %d, %q %s", code, out, errs)
		}
		code, out, _ = cli(t, sock, "get", "sandbox", "web", "-o", "yaml")
		if code != exitOK || !strings.Contains(out, "kind: Sandbox") || strings.Contains(out, "kind: List") {
			t.Errorf("get sb web -o yaml: exit %d, %q", code, out)
		}
		code, out, _ = cli(t, sock, "-o", "json", "get", "sb/web", "secret/openai")
		if code != exitOK || !strings.Contains(out, `"kind": "List"`) || strings.Contains(out, "sk-very-secret-value") {
			t.Errorf("get two -o json: exit %d, %q", code, out)
		}
		code, out, _ = cli(t, sock, "get", "secrets", "-o", "yaml")
		if code != exitOK || strings.Contains(out, "sk-very-secret-value") || !strings.Contains(out, v1alpha1.Redacted) {
			t.Errorf("get secrets -o yaml: exit %d, %q", code, out)
		}
		code, out, _ = cli(t, sock, "get", "sb", "-o", "name", "-l", "app=agent")
		if code != exitOK || out != "sandbox/web\n" {
			t.Errorf("get -l: exit %d, %q", code, out)
		}
		code, out, errs = cli(t, sock, "get", "sb", "web", "nope")
		if code != exitFail || !strings.Contains(out, "web") || !strings.Contains(errs, `Error: sandbox "nope" not found in namespace "default"`) {
			t.Errorf("get missing: exit %d, %q %q", code, out, errs)
		}
		code, out, errs = cli(t, sock, "get", "netpol")
		if code != exitOK || out != "" || errs != "No resources found in default namespace.\n" {
			t.Errorf("get empty: exit %d, %q %q", code, out, errs)
		}
		code, out, _ = cli(t, sock, "get", "sb", "-A")
		if code != exitOK || !strings.HasPrefix(out, "NAMESPACE ") || !strings.Contains(out, "default ") {
			t.Errorf("get -A: exit %d, %q", code, out)
		}
	})

	t.Run("describe", func(t *testing.T) {
		code, out, errs := cli(t, sock, "describe", "sb", "web")
		if code != exitOK || !strings.Contains(out, "Name:") || !strings.Contains(out, "<set to the key 'apiKey' in secret 'openai'>") {
			t.Errorf("describe sb: exit %d, %q %s", code, out, errs)
		}
		code, out, _ = cli(t, sock, "describe", "secret/openai")
		if code != exitOK || strings.Contains(out, "sk-very-secret-value") || !strings.Contains(out, "apiKey:") {
			t.Errorf("describe secret: exit %d, %q", code, out)
		}
		code, _, errs = cli(t, sock, "describe", "sb", "nope")
		if code != exitFail || !strings.Contains(errs, `sandbox "nope" not found`) {
			t.Errorf("describe missing: exit %d, %q", code, errs)
		}
	})

	t.Run("wait", func(t *testing.T) {
		code, _, errs := cli(t, sock, "wait", "sb/web", "--for=condition=Ready", "--timeout=300ms")
		if code != exitFail || errs != "error: timed out waiting for the condition on sandboxes/web\n" {
			t.Errorf("wait timeout: exit %d, %q", code, errs)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			setReady(t, c, "web", v1alpha1.ConditionTrue, v1alpha1.PhaseRunning)
		}()
		code, out, errs := cli(t, sock, "wait", "sb/web", "--for=condition=Ready", "--timeout=20s")
		if code != exitOK || out != "sandbox/web condition met\n" {
			t.Errorf("wait ready: exit %d, %q %q", code, out, errs)
		}
		code, out, errs = cli(t, sock, "wait", "sandbox", "web", "--for=jsonpath={.status.phase}=Running", "--timeout=5s")
		if code != exitOK || out != "sandbox/web condition met\n" {
			t.Errorf("wait jsonpath: exit %d, %q %q", code, out, errs)
		}
		code, _, errs = cli(t, sock, "wait", "sb/nope", "--timeout=5s")
		if code != exitFail || !strings.Contains(errs, `sandbox "nope" not found`) {
			t.Errorf("wait missing: exit %d, %q", code, errs)
		}
	})

	t.Run("diff", func(t *testing.T) {
		code, out, errs := cli(t, sock, "diff", "-f", good)
		if code != exitOK || out != "" {
			t.Errorf("diff unchanged: exit %d, %q %s", code, out, errs)
		}
		dir := t.TempDir()
		changed := strings.Replace(strings.Replace(mustRead(t, good), "image: busybox", "image: alpine", 1), "sk-very-secret-value", "sk-another-secret", 1)
		p := writeManifest(t, dir, "changed.yaml", changed+`---
apiVersion: msb.dev/v1alpha1
kind: NetworkPolicy
metadata: {name: pypi}
spec:
  sandboxSelector: {matchLabels: {app: agent}}
  egress: [{to: [{domain: pypi.example.org}]}]
`)
		code, out, errs = cli(t, sock, "diff", "-f", p)
		if code != exitFail {
			t.Errorf("diff changed: exit %d, %s", code, errs)
		}
		for _, want := range []string{"-  image: busybox", "+  image: alpine", "values: (may differ; not shown)", "--- /dev/null", "+kind: NetworkPolicy"} {
			if !strings.Contains(out, want) {
				t.Errorf("diff lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "sk-") {
			t.Errorf("diff shows a secret value:\n%s", out)
		}
		code, _, _ = cli(t, sock, "diff", "-f", "testdata/bad.yaml")
		if code != diffError {
			t.Errorf("diff of a bad manifest: exit %d, want 2", code)
		}
	})

	t.Run("delete", func(t *testing.T) {
		code, out, errs := cli(t, sock, "delete", "secret", "openai", "--timeout=10s")
		if code != exitOK || out != "secret \"openai\" deleted\n" {
			t.Errorf("delete: exit %d, %q %q", code, out, errs)
		}
		code, _, errs = cli(t, sock, "delete", "secret/openai")
		if code != exitFail || !strings.Contains(errs, `Error: secret "openai" not found in namespace "default"`) {
			t.Errorf("delete missing: exit %d, %q", code, errs)
		}
		code, _, _ = cli(t, sock, "delete", "secret/openai", "--ignore-not-found")
		if code != exitOK {
			t.Errorf("delete --ignore-not-found: exit %d", code)
		}
		// The sandbox's finalizer is removed by the reconciler, which does
		// not run here: delete without waiting, then see wait time out.
		code, out, errs = cli(t, sock, "delete", "sb/web", "--wait=false")
		if code != exitOK || out != "sandbox \"web\" deleted\n" {
			t.Errorf("delete sb: exit %d, %q %q", code, out, errs)
		}
		obj, err := c.Get(context.Background(), v1alpha1.KindSandbox, "default", "web")
		if err == nil && len(obj.GetMetadata().Finalizers) > 0 {
			code, _, errs = cli(t, sock, "wait", "sb/web", "--for=delete", "--timeout=300ms")
			if code != exitFail || !strings.Contains(errs, "timed out") {
				t.Errorf("wait --for=delete with finalizer: exit %d, %q", code, errs)
			}
			obj.GetMetadata().Finalizers = nil
			if _, err := c.Update(context.Background(), obj); err != nil {
				t.Fatal(err)
			}
		}
		code, out, errs = cli(t, sock, "wait", "sb/web", "--for=delete", "--timeout=10s")
		if code != exitOK || out != "sandbox/web deleted\n" {
			t.Errorf("wait --for=delete: exit %d, %q %q", code, out, errs)
		}
	})

	t.Run("exec and logs", func(t *testing.T) {
		code, out, errs := cli(t, sock, "exec", "web", "--", "ls")
		if code != exitFail || out != "" || !strings.HasPrefix(errs, "Error: ") {
			t.Errorf("exec on a stopped sandbox: exit %d, %q %q", code, out, errs)
		}
		code, _, errs = cli(t, sock, "exec", "sb/nope", "--", "ls")
		if code != exitFail || !strings.Contains(errs, `sandbox "nope" not found`) {
			t.Errorf("exec missing: exit %d, %q", code, errs)
		}
		code, _, errs = cli(t, sock, "logs", "nope")
		if code != exitFail || !strings.Contains(errs, `sandbox "nope" not found`) {
			t.Errorf("logs missing: exit %d, %q", code, errs)
		}
	})

	t.Run("events", func(t *testing.T) {
		code, _, errs := cli(t, sock, "events", "--for", "sb/web")
		if code != exitOK {
			t.Errorf("events: exit %d, %q", code, errs)
		}
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
