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
)

// upgrade sends an exec upgrade request with query q on a fresh connection
// and returns the response.
func upgrade(t *testing.T, socket, ns, name, q string) *http.Response {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req, _ := http.NewRequest(http.MethodPost, "http://msbd/apis/msb.dev/v1alpha1/namespaces/"+ns+"/sandboxes/"+name+"/exec?"+q, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", v1alpha1.ExecProtocol)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestExecRequests: bad exec requests are HTTP errors, never an upgrade; a
// good one relays a large input and output byte for byte through a real
// agent whose socket path is longer than a sockaddr_un holds.
func TestExecRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, q string
		code    int
		want    string
	}{
		{"box", "command=true", 400, "is not running (phase Pending)"},
		{"missing", "command=true", 404, "not found"},
		{"box", "", 400, "no command"},
		{"box", "command=true&env=NOEQUALS", 400, "want NAME=VALUE"},
		{"box", "command=true&tty=maybe", 400, "tty="},
		{"box", "command=true&tty=true&rows=70000", 400, "rows="},
	} {
		resp := upgrade(t, e.socket, "default", c.name, c.q)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.want) {
			t.Errorf("exec %s?%s: %d %s; want %d with %q", c.name, c.q, resp.StatusCode, body, c.code, c.want)
		}
	}

	deep := filepath.Join(e.dir, strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := startAgent(t, deep)
	if len(sock) <= 108 {
		t.Fatalf("test socket path too short: %d", len(sock))
	}
	e.rt.setAgentSock(sock)
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	var out bytes.Buffer
	code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{
		Command: []string{"cat"}, Stdin: bytes.NewReader(payload), Stdout: &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec cat: code %d err %v", code, err)
	}
	if !bytes.Equal(out.Bytes(), payload) {
		t.Fatalf("cat gave back %d bytes, want the %d sent", out.Len(), len(payload))
	}
	// The request is logged when the session ends.
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "status=101") }, "the upgrade logged with status 101")
}
