package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/client"
	"msb.dev/msb/client/mcpserver"
)

// mcpConfig is --mcp-listen's checked configuration.
type mcpConfig struct {
	addr  string
	token string
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
	b, err := os.ReadFile(o.mcpTokenFile)
	if err != nil {
		return nil, fmt.Errorf("--mcp-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("--mcp-token-file %s: the token must be one line of at least 16 characters", o.mcpTokenFile)
	}
	return &mcpConfig{addr: o.mcpListen, token: tok}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
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
	srv := mcpserver.New(mcpserver.Options{Client: client.New(socket), DefaultTTL: ttl, Version: version, Logger: log})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Logger:         log,
		SessionTimeout: 30 * time.Minute,
	})
	hs := &http.Server{
		Handler:           requireBearer(cfg.token, h),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
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
