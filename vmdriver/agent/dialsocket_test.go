package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDialSocketRefusesSymlink: a sandbox controls its agent directory; a
// symlink it plants where agent.sock should be must never be followed to
// another socket on the host.
func TestDialSocketRefusesSymlink(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "msbdial")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	target := filepath.Join(dir, "host.sock")
	ln, err := net.Listen("unix", target)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := filepath.Join(dir, "agent.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := DialSocket(ctx, link); err == nil {
		conn.Close()
		t.Fatal("dialAgent followed a symlink to another socket")
	}
	// The real socket is reachable.
	conn, err := DialSocket(ctx, target)
	if err != nil {
		t.Fatalf("dial of the real socket: %v", err)
	}
	conn.Close()
}
