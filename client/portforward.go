package client

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// PortForward opens one TCP connection to port on the sandbox's own loopback
// (127.0.0.1 inside it), through msbd and the sandbox's agent: it works for
// a sandbox without any network. CloseWrite on the returned connection
// half-closes it, as on a TCP connection.
func (c *Client) PortForward(ctx context.Context, namespace, name string, port int) (net.Conn, error) {
	ki, err := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	if err != nil {
		return nil, err
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	q := url.Values{"port": {strconv.Itoa(port)}}
	req, err := http.NewRequest(http.MethodPost, "http://msbd"+objectPath(ki, namespace, name)+"/portforward?"+q.Encode(), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", v1alpha1.PortForwardProtocol)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, c.ctxErr(ctx, fmt.Errorf("port-forward: send request: %w", err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, c.ctxErr(ctx, fmt.Errorf("port-forward: read response: %w", err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), v1alpha1.PortForwardProtocol) {
		conn.Close()
		return nil, fmt.Errorf("port-forward: msbd switched to protocol %q, want %q", resp.Header.Get("Upgrade"), v1alpha1.PortForwardProtocol)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	return &forwardConn{bufferedConn{Conn: conn, r: br}}, nil
}

// forwardConn is a port-forward connection: what the response reader
// buffered is read first, and CloseWrite half-closes.
type forwardConn struct{ bufferedConn }

// CloseWrite half-closes the connection to msbd.
func (b *forwardConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}
