package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMCPTokenFileMode: a token file group or others can read is refused,
// as ssh refuses such a key; 0600 and 0400 are taken.
func TestMCPTokenFileMode(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	os.WriteFile(f, []byte("0123456789abcdef0123\n"), 0o600)
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o400, true}, {0o640, false}, {0o604, false}, {0o644, false}, {0o620, false}} {
		os.Chmod(f, c.mode)
		o := &options{mcpListen: "127.0.0.1:8765", mcpTokenFile: f, mcpMaxMemory: "2Gi", mcpMaxCPUs: "2", mcpMaxPIDs: 10}
		cfg, err := o.checkMCP()
		if c.ok && (err != nil || cfg.token != "0123456789abcdef0123") {
			t.Errorf("mode %04o: %v", c.mode, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "chmod 600")) {
			t.Errorf("mode %04o: %v, want a refusal", c.mode, err)
		}
	}
	os.Chmod(f, 0o600)
	o := &options{mcpListen: "127.0.0.1:8765", mcpTokenFile: f, mcpMaxMemory: "lots", mcpMaxCPUs: "2", mcpMaxPIDs: 10}
	if _, err := o.checkMCP(); err == nil || !strings.Contains(err.Error(), "--mcp-max-memory") {
		t.Errorf("bad --mcp-max-memory: %v", err)
	}
}

// TestMCPHostOrigin: a loopback listener answers only requests whose Host
// is a loopback name (DNS rebinding), and no listener answers a browser
// page from elsewhere (Origin).
func TestMCPHostOrigin(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, c := range []struct {
		loopback     bool
		host, origin string
		want         int
	}{
		{true, "127.0.0.1:8765", "", http.StatusTeapot},
		{true, "localhost:8765", "", http.StatusTeapot},
		{true, "[::1]:8765", "", http.StatusTeapot},
		{true, "evil.example:8765", "", http.StatusForbidden},
		{true, "rebind.127.0.0.1.attacker.test:8765", "", http.StatusForbidden},
		{true, "127.0.0.1:8765", "http://localhost:3000", http.StatusTeapot},
		{true, "127.0.0.1:8765", "https://evil.example", http.StatusForbidden},
		{true, "127.0.0.1:8765", "null", http.StatusForbidden},
		{false, "10.0.0.5:8765", "", http.StatusTeapot},
		{false, "10.0.0.5:8765", "https://evil.example", http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodPost, "http://x/", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		checkHostOrigin(c.loopback, ok).ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("loopback %v, Host %q, Origin %q: %d, want %d", c.loopback, c.host, c.origin, w.Code, c.want)
		}
	}
}
