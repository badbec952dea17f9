package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/client/mcpserver"
)

// mcpConfig is --mcp-listen's checked configuration.
type mcpConfig struct {
	addr         string
	token        string
	loopback     bool // the address is loopback: Host must name loopback too
	allSandboxes bool
	limits       mcpserver.Limits
}

// mcpFlags registers the MCP flags beyond --mcp-listen's own.
func (o *options) mcpFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.mcpAllSandboxes, "mcp-all-sandboxes", false, "let MCP tools exec in, read, write and delete every sandbox, not only the ones MCP sessions created")
	fs.StringVar(&o.mcpMaxMemory, "mcp-max-memory", mcpserver.DefaultMaxMemory, "most memory a sandbox created over MCP may ask for (and what it gets when it asks for none)")
	fs.StringVar(&o.mcpMaxCPUs, "mcp-max-cpus", mcpserver.DefaultMaxCPUs, "most CPUs a sandbox created over MCP may ask for (and what it gets when it asks for none)")
	fs.StringVar(&o.mcpMaxDisk, "mcp-max-disk", mcpserver.DefaultMaxDisk, "most disk a sandbox created over MCP may ask for (and what it gets when it asks for none)")
	fs.Int64Var(&o.mcpMaxPIDs, "mcp-max-pids", mcpserver.DefaultMaxPIDs, "most processes a sandbox created over MCP may ask for (and what it gets when it asks for none)")
}

// checkMCP validates the MCP flags before msbd starts anything: no token
// file, an empty token or a non-loopback address without
// --mcp-allow-remote is a refusal to start, not a warning.
func (o *options) checkMCP() (*mcpConfig, error) {
	if o.mcpListen == "" {
		if o.mcpTokenFile != "" || o.mcpAllowRemote {
			return nil, errors.New("--mcp-token-file and --mcp-allow-remote need --mcp-listen HOST:PORT")
		}
		return nil, nil
	}
	host, _, err := net.SplitHostPort(o.mcpListen)
	if err != nil {
		return nil, fmt.Errorf("--mcp-listen %q: want HOST:PORT, e.g. 127.0.0.1:8765", o.mcpListen)
	}
	if !isLoopback(host) && !o.mcpAllowRemote {
		return nil, fmt.Errorf("--mcp-listen %q is not a loopback address: anyone who can reach it with the token controls sandboxes; give --mcp-allow-remote to mean it", o.mcpListen)
	}
	if o.mcpTokenFile == "" {
		return nil, errors.New("--mcp-listen needs --mcp-token-file FILE: the bearer token clients must send (e.g. head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE)")
	}
	lim := mcpserver.Limits{Memory: v1alpha1.Quantity(o.mcpMaxMemory), CPUs: v1alpha1.Quantity(o.mcpMaxCPUs), PIDs: o.mcpMaxPIDs, Disk: v1alpha1.Quantity(o.mcpMaxDisk)}
	if err := lim.Validate("mcp-max-"); err != nil {
		return nil, err
	}
	if o.mcpMaxPIDs <= 0 {
		return nil, fmt.Errorf("--mcp-max-pids %d: must be more than 0", o.mcpMaxPIDs)
	}
	b, err := readTokenFile(o.mcpTokenFile)
	if err != nil {
		return nil, err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("--mcp-token-file %s: the token must be one line of at least 16 characters", o.mcpTokenFile)
	}
	return &mcpConfig{addr: o.mcpListen, token: tok, loopback: isLoopback(host), allSandboxes: o.mcpAllSandboxes, limits: lim}, nil
}

// readTokenFile reads the bearer token, refusing a file others could read
// or replace, as ssh does with a private key: whoever has the token
// controls sandboxes.
func readTokenFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--mcp-token-file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--mcp-token-file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("--mcp-token-file %s: not a regular file", name)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("--mcp-token-file %s: mode %04o lets group or others read or change the token; chmod 600 %s", name, perm, name)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("--mcp-token-file %s: owned by uid %d, not by msbd's user (uid %d); chown it", name, sys.Uid, os.Geteuid())
	}
	return io.ReadAll(io.LimitReader(f, 4096))
}

func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveMCP serves the MCP tools over streamable HTTP at cfg.addr, each
// request authenticated by the bearer token. The tools reach msbd through
// its own API socket, exactly as msbctl mcp does. It returns a function that
// stops the listener.
func serveMCP(ctx context.Context, cfg *mcpConfig, socket string, ttl time.Duration, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("--mcp-listen: %w", err)
	}
	srv := mcpserver.New(mcpserver.Options{Client: client.New(socket), DefaultTTL: ttl, Version: version, Logger: log, AllSandboxes: cfg.allSandboxes, Limits: cfg.limits})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Logger:         log,
		SessionTimeout: 30 * time.Minute,
	})
	hs := &http.Server{
		Handler:           checkHostOrigin(cfg.loopback, requireBearer(cfg.token, h)),
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout: a sandbox_exec answers on the POST's stream for
		// up to its timeout (1 h). Idle keep-alive connections go.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("MCP server stopped", "err", err)
		}
	}()
	log.Info("serving MCP over streamable HTTP", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}, nil
}

// requireBearer admits a request only with "Authorization: Bearer TOKEN",
// compared in constant time.
func requireBearer(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="msbd-mcp"`)
			http.Error(w, "missing or wrong bearer token (see msbd --mcp-token-file)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkHostOrigin refuses what only a browser fooled by DNS rebinding or a
// cross-site page would send, before the token is even looked at: on a
// loopback listener a Host that is not a loopback name, and on any
// listener an Origin that is not a loopback page (agents send no Origin).
func checkHostOrigin(loopback bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopback && !isLoopback(hostOnly(r.Host)) {
			http.Error(w, fmt.Sprintf("Host %q is not a loopback name: msbd's MCP listener is on loopback", r.Host), http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !isLoopback(u.Hostname()) {
				http.Error(w, fmt.Sprintf("Origin %q refused: browser pages may not use msbd's MCP endpoint", o), http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hostOnly is the host of a Host header ("127.0.0.1:8765", "[::1]:80",
// "localhost").
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}
