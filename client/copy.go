package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// CopyOptions tune a copy to or from a sandbox.
type CopyOptions struct {
	// Into extracts the stream into the existing directory at the path with
	// the stream's names unchanged (for a tar made elsewhere). Otherwise the
	// path is the copy's name unless it is an existing directory (docker cp).
	Into bool
	// Warnings receives what the sandbox left out (devices, fifos), a line each.
	Warnings io.Writer
}

// CopyToSandbox sends the tar stream r (as tarcopy.Write makes it) to the
// sandbox, where its agent unpacks it at path without following any symlink
// below the destination. The error carries the agent's reason.
func (c *Client) CopyToSandbox(ctx context.Context, namespace, name, path string, r io.Reader, opts CopyOptions) error {
	q := url.Values{"direction": {"to"}, "path": {path}}
	if opts.Into {
		q.Set("into", "true")
	}
	return c.copy(ctx, namespace, name, q, ExecOptions{Stdin: r}, opts)
}

// CopyFromSandbox writes a tar stream of the file or tree at path in the
// sandbox to w. The stream comes from the sandbox: unpack it only with
// tarcopy.Extract, which treats it as hostile.
func (c *Client) CopyFromSandbox(ctx context.Context, namespace, name, path string, w io.Writer, opts CopyOptions) error {
	q := url.Values{"direction": {"from"}, "path": {path}}
	return c.copy(ctx, namespace, name, q, ExecOptions{Stdout: w}, opts)
}

func (c *Client) copy(ctx context.Context, namespace, name string, q url.Values, eo ExecOptions, opts CopyOptions) error {
	msg := &boundedBuffer{max: 64 << 10}
	eo.Stderr = msg
	code, err := c.stream(ctx, namespace, name, "cp", q, eo)
	if err != nil {
		return err
	}
	text := msg.String()
	// Warnings come first, a line each; the last line of a failure is its reason.
	var warnings, reasons []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.HasPrefix(l, "warning: ") {
			warnings = append(warnings, l)
		} else if l != "" {
			reasons = append(reasons, l)
		}
	}
	if opts.Warnings != nil {
		for _, w := range warnings {
			fmt.Fprintln(opts.Warnings, w)
		}
	}
	if code != 0 {
		if len(reasons) == 0 {
			return fmt.Errorf("the copy failed in the sandbox (exit code %d)", code)
		}
		return errors.New(strings.Join(reasons, "; "))
	}
	return nil
}

// boundedBuffer keeps the first max bytes written to it and drops the rest.
type boundedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string { return b.buf.String() }
