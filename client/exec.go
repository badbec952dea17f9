package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// bufferedConn reads first what a bufio.Reader already took from the conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// execQuery encodes opts as the exec endpoint's query.
func execQuery(opts ExecOptions) url.Values {
	q := url.Values{"command": opts.Command}
	if len(opts.Env) > 0 {
		q["env"] = opts.Env
	}
	if opts.WorkingDir != "" {
		q.Set("workingDir", opts.WorkingDir)
	}
	if opts.Stdin != nil {
		q.Set("stdin", "true")
	}
	if opts.TTY {
		q.Set("tty", "true")
		if opts.Term != "" {
			q.Set("term", opts.Term)
		}
		q.Set("rows", strconv.Itoa(int(opts.Rows)))
		q.Set("cols", strconv.Itoa(int(opts.Cols)))
	}
	return q
}

// exec upgrades a fresh connection to the exec stream protocol (see
// v1alpha1.ExecProtocol) and relays the command's input, output, window size and
// signals until msbd sends its exit code.
func (c *Client) exec(ctx context.Context, namespace, name string, opts ExecOptions) (int, error) {
	if len(opts.Command) == 0 {
		return -1, fmt.Errorf("exec: no command given")
	}
	return c.stream(ctx, namespace, name, "exec", execQuery(opts), opts)
}

// upgrade asks msbd, on conn, to switch the POST of path?q to protocol, and
// returns the reader of what follows its answer. what names the request in
// errors. The caller owns conn (and ends it with ctx).
func (c *Client) upgrade(ctx context.Context, conn net.Conn, path string, q url.Values, protocol, what string) (*bufio.Reader, error) {
	req, err := http.NewRequest(http.MethodPost, "http://msbd"+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", protocol)
	if err := req.Write(conn); err != nil {
		return nil, c.ctxErr(ctx, fmt.Errorf("%s: send request: %w", what, err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, c.ctxErr(ctx, fmt.Errorf("%s: read response: %w", what, err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if resp.StatusCode < 300 {
			return nil, fmt.Errorf("%s: msbd answered %s instead of switching protocols", what, resp.Status)
		}
		return nil, readAPIError(resp)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), protocol) {
		return nil, fmt.Errorf("%s: msbd switched to protocol %q, want %q", what, resp.Header.Get("Upgrade"), protocol)
	}
	return br, nil
}

// stream runs the upgraded exec stream protocol on the sandbox's sub
// resource (exec or cp) with query q; opts give its streams.
func (c *Client) stream(ctx context.Context, namespace, name, sub string, q url.Values, opts ExecOptions) (int, error) {
	ki, err := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	if err != nil {
		return -1, err
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	// Closing the connection is what ends every step below when ctx ends;
	// msbd then closes the command's session, which kills the command.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	br, err := c.upgrade(ctx, conn, objectPath(ki, namespace, name)+"/"+sub, q, v1alpha1.ExecProtocol, "exec")
	if err != nil {
		return -1, err
	}

	fw := v1alpha1.NewFrameWriter(conn)
	done := make(chan struct{})
	defer close(done)
	stdinCredit := newCredit()
	if opts.Stdin != nil {
		go func() {
			// Input ends with an empty frame; a read error ends it too. It
			// is sent only as far as msbd granted (see v1alpha1.StreamCredit).
			buf := make([]byte, 32<<10)
			for {
				n := stdinCredit.take(len(buf), done)
				if n == 0 {
					return
				}
				m, err := opts.Stdin.Read(buf[:n])
				if m > 0 {
					if fw.WriteFrame(v1alpha1.StreamStdin, buf[:m]) != nil {
						return
					}
				}
				if m < n {
					stdinCredit.grant(n - m)
				}
				if err != nil {
					fw.WriteFrame(v1alpha1.StreamStdin, nil)
					return
				}
			}
		}()
	}
	if opts.Resize != nil || opts.Signals != nil {
		go func() {
			resize, signals := opts.Resize, opts.Signals
			for resize != nil || signals != nil {
				select {
				case ws, ok := <-resize:
					if !ok {
						resize = nil
						continue
					}
					b, _ := json.Marshal(ws)
					fw.WriteFrame(v1alpha1.StreamResize, b)
				case sig, ok := <-signals:
					if !ok {
						signals = nil
						continue
					}
					fw.WriteFrame(v1alpha1.StreamSignal, []byte(strconv.Itoa(int(sig))))
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
	r := &bufferedConn{Conn: conn, r: br}
	var buf []byte
	for {
		stream, p, err := v1alpha1.ReadFrame(r, &buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errors.New("msbd closed the connection before the command's exit code")
			}
			return -1, c.ctxErr(ctx, fmt.Errorf("exec: %w", err))
		}
		switch stream {
		case v1alpha1.StreamStdout:
			if _, err := stdout.Write(p); err != nil {
				return -1, fmt.Errorf("exec: writing output: %w", err)
			}
		case v1alpha1.StreamStderr:
			if _, err := stderr.Write(p); err != nil {
				return -1, fmt.Errorf("exec: writing output: %w", err)
			}
		case v1alpha1.StreamCredit:
			if len(p) == 4 {
				stdinCredit.grant(int(binary.BigEndian.Uint32(p)))
			}
		case v1alpha1.StreamExit:
			var res v1alpha1.ExecResult
			if err := json.Unmarshal(p, &res); err != nil {
				return -1, fmt.Errorf("exec: bad exit frame: %w", err)
			}
			if opts.Result != nil {
				*opts.Result = res
			}
			if res.Error != "" {
				return res.ExitCode, c.ctxErr(ctx, errors.New(res.Error))
			}
			return res.ExitCode, nil
		default:
			return -1, fmt.Errorf("exec: unexpected stream %d from msbd", stream)
		}
	}
}

// ctxErr prefers ctx's error when ctx ended: the failure was only its echo.
func (c *Client) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
