package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"msb.dev/msb/tarcopy"
)

// File copy (msbctl cp) rides on an ordinary session: its "exec" request
// carries a copyPayload instead of an argv, and the agent reads or writes a
// tarcopy stream on the session's stdin or stdout itself, with no process in
// the sandbox. Success is exit status 0; a failure is exit status 1 with the
// reason on stderr. So it works wherever exec works (both drivers), and msbd
// relays it with the exec machinery.

// Copy directions.
const (
	CopyFromSandbox = "from" // the agent writes a tar stream of Path
	CopyToSandbox   = "to"   // the agent extracts a tar stream to Path
)

// copyPayload is the "copy" field of an exec request.
type copyPayload struct {
	Direction string `json:"direction"`
	Path      string `json:"path"`
	// Into extracts into the existing directory Path, names unchanged
	// (a tar stream made elsewhere); otherwise as tarcopy.Extract.
	Into bool `json:"into,omitempty"`
}

// CopyRequest is one file copy. Path is absolute or relative to the
// sandbox's working directory.
type CopyRequest struct {
	Direction string // CopyFromSandbox or CopyToSandbox
	Path      string
	Into      bool
	// Stdin carries the tar stream to the sandbox (CopyToSandbox), Stdout
	// the one from it (CopyFromSandbox). Stderr receives warnings.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Copy runs a copy as an exec whose payload names it: see ExecRequest.Copy.
func (c *Client) Copy(ctx context.Context, req CopyRequest) (exitCode int, err error) {
	return c.Exec(ctx, ExecRequest{
		Copy:   &req,
		Stdin:  req.Stdin,
		Stdout: req.Stdout,
		Stderr: req.Stderr,
	})
}

func (r *CopyRequest) payload() (*copyPayload, error) {
	if r.Direction != CopyFromSandbox && r.Direction != CopyToSandbox {
		return nil, fmt.Errorf("copy: direction %q: want %q or %q", r.Direction, CopyFromSandbox, CopyToSandbox)
	}
	if r.Path == "" {
		return nil, errors.New("copy: no path in the sandbox")
	}
	return &copyPayload{Direction: r.Direction, Path: r.Path, Into: r.Into}, nil
}

// runCopy serves a copy session: it runs as the agent (root in the sandbox),
// whose "/" is the sandbox's root, so no path it resolves leaves the sandbox.
// A copy into the sandbox in addition follows no symlink on the way to the
// destination that the workload's user could have planted (resolveCopyDest),
// never follows one below it (the extractor), and owns what it creates by
// that user: the workload cannot turn the root agent's write into one of
// /etc/passwd.
func (s *session) runCopy(p copyPayload) {
	cfg := s.srv.cfg
	path := p.Path
	if !filepath.IsAbs(path) {
		// Not filepath.Join: a trailing "/." (a directory's contents,
		// tarcopy.TopName) must reach tarcopy.Write as given.
		path = strings.TrimSuffix(cfg.WorkingDir, "/") + "/" + path
	}
	var err error
	switch p.Direction {
	case CopyFromSandbox:
		err = tarcopy.Write(s.ch, path, func(w string) { fmt.Fprintf(s.ch.Stderr(), "warning: %s\n", w) })
	case CopyToSandbox:
		opts := tarcopy.Options{Into: p.Into, KeepSetID: true, NoFollowDest: true}
		if cfg.UID != 0 || cfg.GID != 0 {
			opts.Chown, opts.UID, opts.GID = true, int(cfg.UID), int(cfg.GID)
		}
		path, err = resolveCopyDest(path, trustedLink(cfg.UID))
		if err == nil {
			err = tarcopy.Extract(s.ch, path, opts)
		}
		if err == nil {
			// Drain what the sender may still send after the end of the archive.
			io.Copy(io.Discard, s.ch)
		}
	default:
		err = fmt.Errorf("unknown copy direction %q", p.Direction)
	}
	close(s.exited)
	if err != nil {
		fmt.Fprintf(s.ch.Stderr(), "%v\n", err)
		s.finish(1, 0)
		return
	}
	s.finish(0, 0)
}
