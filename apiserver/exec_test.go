package apiserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// listenLong listens on a unix socket path of any length, through the
// directory's /proc/self/fd entry as an agent does.
func listenLong(t *testing.T, path string) net.Listener {
	t.Helper()
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ln, err := net.Listen("unix", fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path)))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// upgrade sends the exec upgrade request on a fresh connection and returns
// the connection (with what was read past the response) and the response.
func upgrade(t *testing.T, socket, ns, name string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req, _ := http.NewRequest(http.MethodPost, "http://msbd/apis/msb.dev/v1alpha1/namespaces/"+ns+"/sandboxes/"+name+"/exec", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "msb-agent-ssh")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

// TestExecSplice checks the upgrade and the raw splice to the agent socket,
// byte for byte in both directions with half-close, at a socket path longer
// than a sockaddr_un holds.
func TestExecSplice(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}

	// Not running: an HTTP error, not an upgrade.
	_, _, resp := upgrade(t, e.socket, "default", "box")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "is not running (phase Pending)") {
		t.Fatalf("exec in a stopped sandbox: %d %s", resp.StatusCode, body)
	}
	_, _, resp = upgrade(t, e.socket, "default", "missing")
	if resp.StatusCode != 404 {
		t.Fatalf("exec in a missing sandbox: %d", resp.StatusCode)
	}

	deep := filepath.Join(e.dir, strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(deep, "agent.sock")
	if len(sock) <= 108 {
		t.Fatalf("test socket path too short: %d", len(sock))
	}
	ln := listenLong(t, sock)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo, then close after EOF
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	e.rt.setAgentSock(sock)

	conn, br, resp := upgrade(t, e.socket, "default", "box")
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "msb-agent-ssh" {
		t.Fatalf("upgrade answered %s %v", resp.Status, resp.Header)
	}
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		conn.Write(payload)
		conn.(*net.UnixConn).CloseWrite()
	}()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(payload) {
		t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(payload))
	}
	// The request is logged when the session ends.
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "status=101") }, "the upgrade logged with status 101")
}
