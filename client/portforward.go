package client

import (
	"context"
	"net"
	"net/url"
	"strconv"

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
	br, err := c.upgrade(ctx, conn, objectPath(ki, namespace, name)+"/portforward", q, v1alpha1.PortForwardProtocol, "port-forward")
	if err != nil {
		conn.Close()
		return nil, err
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
