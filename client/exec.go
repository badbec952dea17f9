package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver/agent"
)

// execProtocol is the Upgrade token of the exec endpoint.
const execProtocol = "msb-agent-ssh"

// bufferedConn reads first what a bufio.Reader already took from the conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying connection when it can.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// exec upgrades a fresh connection to the sandbox's agent protocol and runs
// the command over it.
func (c *Client) exec(ctx context.Context, namespace, name string, opts ExecOptions) (int, error) {
	if len(opts.Command) == 0 {
		return -1, fmt.Errorf("exec: no command given")
	}
	ki, err := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	if err != nil {
		return -1, err
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	// Closing the connection is what ends every step below when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	req, err := http.NewRequest(http.MethodPost, "http://msbd"+objectPath(ki, namespace, name)+"/exec", nil)
	if err != nil {
		return -1, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", execProtocol)
	if err := req.Write(conn); err != nil {
		return -1, c.ctxErr(ctx, fmt.Errorf("exec: send request: %w", err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return -1, c.ctxErr(ctx, fmt.Errorf("exec: read response: %w", err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if resp.StatusCode < 300 {
			return -1, fmt.Errorf("exec: msbd answered %s instead of switching protocols", resp.Status)
		}
		return -1, readAPIError(resp)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), execProtocol) {
		return -1, fmt.Errorf("exec: msbd switched to protocol %q, want %q", resp.Header.Get("Upgrade"), execProtocol)
	}

	ac, err := agent.NewClient(&bufferedConn{Conn: conn, r: br})
	if err != nil {
		return -1, c.ctxErr(ctx, fmt.Errorf("exec: %w", err))
	}
	defer ac.Close()

	done := make(chan struct{})
	defer close(done)
	var resize chan agent.WindowSize
	if opts.Resize != nil {
		resize = make(chan agent.WindowSize)
		go func() {
			for {
				select {
				case ws, ok := <-opts.Resize:
					if !ok {
						close(resize)
						return
					}
					select {
					case resize <- agent.WindowSize{Rows: ws.Rows, Cols: ws.Cols}:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	stdout, stderr := opts.Stdout, opts.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	areq := agent.ExecRequest{
		Argv:       opts.Command,
		Env:        opts.Env,
		WorkingDir: opts.WorkingDir,
		TTY:        opts.TTY,
		Term:       opts.Term,
		Rows:       opts.Rows,
		Cols:       opts.Cols,
		Stdin:      opts.Stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		Signals:    opts.Signals,
	}
	if resize != nil {
		areq.Resize = resize
	}
	code, err := ac.Exec(ctx, areq)
	if err != nil {
		return code, c.ctxErr(ctx, err)
	}
	return code, nil
}

// ctxErr prefers ctx's error when ctx ended: the failure was only its echo.
func (c *Client) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
