package apiserver_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/tarcopy"
)

// TestCopyRequests: bad cp requests are HTTP errors; good ones carry a tar
// stream both ways through a real agent, and the agent's refusal comes back
// as the client's error.
func TestCopyRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	sock := startAgent(t, t.TempDir())
	e.rt.setAgentSock(sock)
	for _, c := range []struct{ q, want string }{
		{"path=/x", "direction="},
		{"direction=sideways&path=/x", "direction="},
		{"direction=from", "path"},
		{"direction=to&path=/x&into=maybe", "into="},
	} {
		conn, err := net.Dial("unix", e.socket)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://msbd/apis/msb.dev/v1alpha1/namespaces/default/sandboxes/box/cp?"+c.q, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", v1alpha1.ExecProtocol)
		req.Write(conn)
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), c.want) {
			t.Errorf("cp?%s: %d %s; want 400 with %q", c.q, resp.StatusCode, body, c.want)
		}
	}

	// The agent runs on this host in the test: its paths are host paths.
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("payload"), 0o640)
	var tb bytes.Buffer
	if err := tarcopy.Write(&tb, src, nil); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copied")
	if err := e.client.CopyToSandbox(ctx, "default", "box", dst, &tb, client.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "payload" {
		t.Fatalf("copied: %q", b)
	}
	var back bytes.Buffer
	if err := e.client.CopyFromSandbox(ctx, "default", "box", dst, &back, client.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(back.Bytes(), []byte("payload")) {
		t.Error("the stream back lacks the file")
	}
	err := e.client.CopyFromSandbox(ctx, "default", "box", "/nonexistent/x", io.Discard, client.CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/x") {
		t.Errorf("missing source: %v", err)
	}
}
