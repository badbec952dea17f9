package mcpserver

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/client"
)

// ExecInput is sandbox_exec's input; Command is a string or []any of strings.
type ExecInput struct {
	Name           string `json:"name" jsonschema:"the sandbox's name"`
	Command        any    `json:"command"`
	Stdin          string `json:"stdin,omitempty" jsonschema:"text given to the command's standard input"`
	WorkingDir     string `json:"workingDir,omitempty" jsonschema:"directory to run in; default the sandbox's"`
	TimeoutSeconds int    `json:"timeoutSeconds,omitempty" jsonschema:"kill the command after this many seconds (default 60, at most 3600)"`
}

// ExecOutput is sandbox_exec's result.
type ExecOutput struct {
	ExitCode        int    `json:"exitCode" jsonschema:"the command's exit code; 128+N when killed by signal N, 127 when not found"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdoutTruncated,omitempty"`
	StderrTruncated bool   `json:"stderrTruncated,omitempty"`
	TimedOut        bool   `json:"timedOut,omitempty" jsonschema:"the command ran past timeoutSeconds and was killed"`
}

func argv(cmd any) ([]string, error) {
	switch c := cmd.(type) {
	case string:
		if strings.TrimSpace(c) == "" {
			return nil, errors.New("command is empty")
		}
		return []string{"sh", "-c", c}, nil
	case []any:
		out := make([]string, 0, len(c))
		for i, a := range c {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("command[%d] is not a string", i)
			}
			out = append(out, s)
		}
		if len(out) == 0 || out[0] == "" {
			return nil, errors.New("command is empty")
		}
		return out, nil
	case []string:
		if len(c) == 0 || c[0] == "" {
			return nil, errors.New("command is empty")
		}
		return c, nil
	}
	return nil, errors.New(`command must be a string (run with sh -c) or an array of strings`)
}

func (s *server) exec(ctx context.Context, _ *mcp.CallToolRequest, in ExecInput) (*mcp.CallToolResult, ExecOutput, error) {
	args, err := argv(in.Command)
	if err != nil {
		return nil, ExecOutput{}, fmt.Errorf("sandbox_exec: %v", err)
	}
	if err := s.own(ctx, "sandbox_exec", in.Name); err != nil {
		return nil, ExecOutput{}, err
	}
	timeout := DefaultTimeout
	if in.TimeoutSeconds > 0 {
		timeout = min(time.Duration(in.TimeoutSeconds)*time.Second, MaxTimeout)
	}
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr := &capped{max: MaxOutput}, &capped{max: MaxOutput}
	opts := client.ExecOptions{Command: args, WorkingDir: in.WorkingDir, Stdout: stdout, Stderr: stderr}
	if in.Stdin != "" {
		opts.Stdin = strings.NewReader(in.Stdin)
	}
	code, err := s.c.Exec(ectx, s.ns, in.Name, opts)
	out := ExecOutput{
		ExitCode: code,
		Stdout:   strings.ToValidUTF8(stdout.buf.String(), "\uFFFD"), StdoutTruncated: stdout.cut,
		Stderr: strings.ToValidUTF8(stderr.buf.String(), "\uFFFD"), StderrTruncated: stderr.cut,
	}
	if err != nil {
		if ectx.Err() != nil && ctx.Err() == nil {
			// Closing the exec's connection killed the command.
			out.TimedOut, out.ExitCode = true, 137
		} else {
			return nil, ExecOutput{}, s.toolError("sandbox_exec", in.Name, err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "exit code %d", out.ExitCode)
	if out.TimedOut {
		fmt.Fprintf(&b, " (killed after the %s timeout)", timeout)
	}
	b.WriteString("\n")
	for _, st := range []struct {
		name, text string
		cut        bool
	}{{"stdout", out.Stdout, out.StdoutTruncated}, {"stderr", out.Stderr, out.StderrTruncated}} {
		if st.text == "" {
			continue
		}
		fmt.Fprintf(&b, "--- %s ---\n%s", st.name, st.text)
		if !strings.HasSuffix(st.text, "\n") {
			b.WriteString("\n")
		}
		if st.cut {
			fmt.Fprintf(&b, "[%s truncated at %d bytes: write it to a file and read parts of it]\n", st.name, MaxOutput)
		}
	}
	return text("%s", b.String()), out, nil
}

// capped keeps the first max bytes written and notes that more came.
type capped struct {
	buf bytes.Buffer
	max int
	cut bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room < len(p) {
		c.cut = true
		c.buf.Write(p[:max(room, 0)])
	} else {
		c.buf.Write(p)
	}
	return len(p), nil
}

// WriteFileInput is sandbox_write_file's input.
type WriteFileInput struct {
	Name     string `json:"name" jsonschema:"the sandbox's name"`
	Path     string `json:"path" jsonschema:"the file's path in the sandbox (relative: to its working directory)"`
	Content  string `json:"content" jsonschema:"the file's content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"text (default) or base64 for binary content"`
	Mode     string `json:"mode,omitempty" jsonschema:"permission bits in octal, e.g. 0755; default 0644"`
}

// WriteFileOutput is sandbox_write_file's result.
type WriteFileOutput struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

func (s *server) writeFile(ctx context.Context, _ *mcp.CallToolRequest, in WriteFileInput) (*mcp.CallToolResult, WriteFileOutput, error) {
	data := []byte(in.Content)
	switch in.Encoding {
	case "", "text", "utf-8", "utf8":
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, WriteFileOutput{}, fmt.Errorf("sandbox_write_file: content is not valid base64: %v", err)
		}
	default:
		return nil, WriteFileOutput{}, fmt.Errorf("sandbox_write_file: encoding %q: want text or base64", in.Encoding)
	}
	if len(data) > MaxFileWrite {
		return nil, WriteFileOutput{}, fmt.Errorf("sandbox_write_file: %d bytes is more than the %d a call may write; split the file", len(data), MaxFileWrite)
	}
	mode := int64(0o644)
	if in.Mode != "" {
		m, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || m > 0o7777 {
			return nil, WriteFileOutput{}, fmt.Errorf("sandbox_write_file: mode %q: want octal permission bits such as 0644", in.Mode)
		}
		mode = int64(m)
	}
	p := strings.TrimRight(in.Path, "/")
	base := path.Base(p)
	if p == "" || base == "." || base == ".." || base == "/" {
		return nil, WriteFileOutput{}, fmt.Errorf("sandbox_write_file: path %q does not name a file", in.Path)
	}
	dir := path.Dir(p)
	if err := s.own(ctx, "sandbox_write_file", in.Name); err != nil {
		return nil, WriteFileOutput{}, err
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: base, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), ModTime: time.Now(), Format: tar.FormatPAX})
	tw.Write(data)
	tw.Close()
	// Into the existing directory, so a path that is a directory is an
	// error rather than a file inside it.
	if err := s.c.CopyToSandbox(ctx, s.ns, in.Name, dir, &b, client.CopyOptions{Into: true}); err != nil {
		return nil, WriteFileOutput{}, s.toolError("sandbox_write_file "+in.Path, in.Name, err)
	}
	return text("wrote %d bytes to %s", len(data), in.Path), WriteFileOutput{Path: in.Path, Bytes: len(data)}, nil
}

// ReadFileInput is sandbox_read_file's input.
type ReadFileInput struct {
	Name     string `json:"name" jsonschema:"the sandbox's name"`
	Path     string `json:"path" jsonschema:"the file's path in the sandbox (relative: to its working directory)"`
	MaxBytes int    `json:"maxBytes,omitempty" jsonschema:"return at most this many bytes (default and most 1048576)"`
}

// ReadFileOutput is sandbox_read_file's result.
type ReadFileOutput struct {
	Path      string `json:"path"`
	Content   string `json:"content"`
	Encoding  string `json:"encoding" jsonschema:"text, or base64 when the content is not UTF-8"`
	Size      int64  `json:"size" jsonschema:"the whole file's size in bytes"`
	Truncated bool   `json:"truncated,omitempty" jsonschema:"only the first maxBytes are returned"`
	Mode      string `json:"mode"`
}

var errEnough = errors.New("read enough")

func (s *server) readFile(ctx context.Context, _ *mcp.CallToolRequest, in ReadFileInput) (*mcp.CallToolResult, ReadFileOutput, error) {
	limit := MaxFileRead
	if in.MaxBytes > 0 {
		limit = min(in.MaxBytes, MaxFileRead)
	}
	if in.Path == "" {
		return nil, ReadFileOutput{}, errors.New("sandbox_read_file: path is required")
	}
	if err := s.own(ctx, "sandbox_read_file", in.Name); err != nil {
		return nil, ReadFileOutput{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type result struct {
		out ReadFileOutput
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Only the first entry is read, and only limit bytes of it: a
		// huge file (or a hostile stream) costs nothing more.
		var r result
		tr := tar.NewReader(pr)
		hdr, err := tr.Next()
		switch {
		case err != nil:
			r.err = err
		case hdr.Typeflag == tar.TypeDir:
			r.err = fmt.Errorf("%s is a directory; list it with sandbox_exec (ls -la %s)", in.Path, in.Path)
		case hdr.Typeflag != tar.TypeReg:
			r.err = fmt.Errorf("%s is not a regular file", in.Path)
		default:
			data, err := io.ReadAll(io.LimitReader(tr, int64(limit)))
			r.err = err
			r.out = ReadFileOutput{Path: in.Path, Size: hdr.Size, Truncated: hdr.Size > int64(len(data)), Mode: fmt.Sprintf("%04o", hdr.Mode&0o7777)}
			if utf8.Valid(data) {
				r.out.Content, r.out.Encoding = string(data), "text"
			} else {
				r.out.Content, r.out.Encoding = base64.StdEncoding.EncodeToString(data), "base64"
			}
		}
		pr.CloseWithError(errEnough)
		cancel() // the rest of the stream is not wanted
		done <- r
	}()
	err := s.c.CopyFromSandbox(rctx, s.ns, in.Name, in.Path, pw, client.CopyOptions{})
	pw.CloseWithError(err)
	r := <-done
	if err != nil && !errors.Is(err, errEnough) && !errors.Is(err, context.Canceled) {
		return nil, ReadFileOutput{}, s.toolError("sandbox_read_file "+in.Path, in.Name, err)
	}
	if r.err != nil {
		return nil, ReadFileOutput{}, fmt.Errorf("sandbox_read_file: %v", r.err)
	}
	msg := r.out.Content
	if r.out.Encoding == "base64" {
		msg = fmt.Sprintf("[%d bytes of binary content, base64 in the structured result]", len(msg)*3/4)
	}
	if r.out.Truncated {
		msg += fmt.Sprintf("\n[truncated: first %d of %d bytes]", limit, r.out.Size)
	}
	return text("%s", msg), r.out, nil
}
