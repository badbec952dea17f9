package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Port forwarding (msbctl port-forward): the host opens an SSH
// "direct-tcpip" channel naming a port, and the agent connects to that port
// on the sandbox's own loopback (127.0.0.1) and copies bytes both ways. It
// needs no network: the connection is made inside the sandbox, as kubectl's
// port-forward makes it inside the pod. The host named in the request is
// ignored: only the sandbox's loopback is ever dialled, so a forward cannot
// reach anything the sandbox itself could not.

// directTCPIP is the payload of a "direct-tcpip" channel open (RFC 4254 7.2).
type directTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// forwardDialTimeout bounds the connect to a port nothing listens on.
const forwardDialTimeout = 10 * time.Second

// serveForward serves one "direct-tcpip" channel.
func serveForward(nc ssh.NewChannel) {
	var p directTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil || p.Port == 0 || p.Port > 65535 {
		nc.Reject(ssh.ConnectionFailed, "direct-tcpip: want a port from 1 to 65535")
		return
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.Port)))
	conn, err := net.DialTimeout("tcp", addr, forwardDialTimeout)
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("connect to %s in the sandbox: %v", addr, err))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	spliceForward(ch, conn)
}

// spliceForward copies both ways until both directions end, passing each
// direction's end on as a half close.
func spliceForward(ch ssh.Channel, conn net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(conn, ch)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		io.Copy(ch, conn)
		ch.CloseWrite()
	}()
	wg.Wait()
	ch.Close()
	conn.Close()
}

// DialPort connects to port on the sandbox's loopback through the agent.
// The connection's writes reach the sandbox's server; CloseWrite, where the
// returned conn has it, half-closes.
func (c *Client) DialPort(ctx context.Context, port int) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("port %d: want 1 to 65535", port)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := c.c.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
