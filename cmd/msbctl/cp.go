package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/tarcopy"
)

type cpOptions struct{ globalOptions }

func (o *cpOptions) flags() *flagSet {
	fs := newFlagSet("cp")
	o.register(fs)
	return fs
}

func newCpCommand(e *env) *cobra.Command {
	o := &cpOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "cp SRC DEST"
	cmd.Short = "Copy files and directories to and from a sandbox"
	cmd.Long = `Copy a file or a directory tree between this machine and a running sandbox.
One side is local, the other NAME:PATH (PATH relative to the sandbox's working
directory unless absolute). Modes and modification times are kept, any size
is streamed, and the sandbox's agent does the sandbox's side itself, so the
image needs no tar.

As with docker cp: when DEST is an existing directory the copy lands inside
it under SRC's name, otherwise it is created as DEST. A SRC of - reads a tar
stream from standard input and unpacks it into the directory DEST; a DEST of
- writes a tar stream to standard output.

What a sandbox sends is untrusted: it may write only the entry SRC names
(SRC's base name inside DEST, or DEST itself) and what is below it, never
another name in DEST. Absolute names, "..", symlinks pointing out of the
entry or climbing ("..") after a name, hardlinks to anything this copy did
not write, a symlink on the way to an entry, device nodes, fifos and sparse
files are refused; setuid bits are cleared; directories that were there
keep their modes and times. The copy stops at the first such entry and
names it. Copies into a sandbox never follow a symlink below DEST, nor one
on the way to DEST that the sandbox's user could have planted. A local path
with a colon is written ./a:b.`
	cmd.Example = `  # Copy a directory into a sandbox
  msbctl cp ./src web:/work/src

  # Copy a file out of it
  msbctl cp web:/work/result.json ./result.json

  # Pipe a tar stream in, or out
  tar -C dist -c . | msbctl cp - web:/srv/www
  msbctl cp web:/var/log - | tar -t`
	cmd.Annotations = map[string]string{exitCodesAnnotation: "Exit codes: 0 when everything was copied; 1 when the copy failed (the message names the path); 2 on a usage error."}
	cmd.ValidArgsFunction = completeCpArg(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runCp(ctx, c, o, args, stdinReader, e.stdout, e.stderr)
	})
	return cmd
}

// completeCpArg offers "NAME:" for every sandbox next to the local files;
// after the colon the path is the sandbox's, which the shell cannot list.
func completeCpArg(g *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= 2 || strings.Contains(toComplete, ":") || strings.ContainsAny(toComplete, "/.") {
			return nil, cobra.ShellCompDirectiveDefault
		}
		ki, _ := v1alpha1.LookupKind(v1alpha1.KindSandbox)
		var out []cobra.Completion
		for _, n := range objectNames(cmd.Context(), g, ki, nil, "", toComplete) {
			name, desc, _ := strings.Cut(n, "\t")
			out = append(out, cobra.CompletionWithDesc(name+":", desc))
		}
		if len(out) == 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		return out, cobra.ShellCompDirectiveNoSpace
	}
}

// sandboxNameRE is a DNS-1123 label, what a Sandbox's name must be.
var sandboxNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// remoteRef is NAME:PATH (or sandbox/NAME:PATH) on the command line.
type remoteRef struct{ name, path string }

// parseCpArg tells a sandbox reference from a local path: a name that could
// be a sandbox's, a colon, then the path. "-" and paths starting with "/" or
// "." are local.
func parseCpArg(s string) (*remoteRef, error) {
	if s == "-" || strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return nil, nil
	}
	before, after, ok := strings.Cut(s, ":")
	if !ok {
		return nil, nil
	}
	name := strings.TrimPrefix(before, "sandbox/")
	name = strings.TrimPrefix(name, "sb/")
	if len(name) > 63 || !sandboxNameRE.MatchString(name) {
		return nil, nil // a local path with a colon
	}
	if after == "" {
		return nil, usagef("%q: give the path in the sandbox after the colon, e.g. %s:/tmp", s, name)
	}
	return &remoteRef{name: name, path: after}, nil
}

func runCp(ctx context.Context, c *client.Client, o *cpOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		return usageFail(stderr, "cp", "want SRC and DEST, one of them NAME:PATH, got %d arguments", len(args))
	}
	src, err := parseCpArg(args[0])
	if err != nil {
		return fail(stderr, err)
	}
	dst, err := parseCpArg(args[1])
	if err != nil {
		return fail(stderr, err)
	}
	switch {
	case src != nil && dst != nil:
		return usageFail(stderr, "cp", "both sides are sandboxes; copy through this machine in two steps")
	case src == nil && dst == nil:
		return usageFail(stderr, "cp", "neither side is a sandbox: write one as NAME:PATH (a local path with a colon as ./a:b)")
	case dst != nil:
		err = copyTo(ctx, c, o.namespace, args[0], dst, stdin, stderr)
	default:
		err = copyFrom(ctx, c, o.namespace, src, args[1], stdout, stderr)
	}
	if err != nil {
		if client.IsNotFound(err) {
			name := dst
			if name == nil {
				name = src
			}
			err = fmt.Errorf("sandbox %q not found in namespace %q", name.name, o.namespace)
		}
		return fail(stderr, err)
	}
	return exitOK
}

func copyTo(ctx context.Context, c *client.Client, ns, local string, dst *remoteRef, stdin io.Reader, stderr io.Writer) error {
	where := dst.name + ":" + dst.path
	if local == "-" {
		if err := c.CopyToSandbox(ctx, ns, dst.name, dst.path, stdin, client.CopyOptions{Into: true}); err != nil {
			return fmt.Errorf("copy to %s: %w", where, err)
		}
		return nil
	}
	if _, err := os.Stat(local); err != nil {
		return fmt.Errorf("copy %s: %w", local, unwrapPathErr(err))
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := tarcopy.Write(pw, local, func(w string) { fmt.Fprintf(stderr, "warning: %s\n", w) })
		pw.CloseWithError(err)
		werr <- err
	}()
	err := c.CopyToSandbox(ctx, ns, dst.name, dst.path, pr, client.CopyOptions{})
	pr.CloseWithError(errCopyEnded)
	if lerr := <-werr; lerr != nil && !errors.Is(lerr, errCopyEnded) {
		return fmt.Errorf("copy %s: %w", local, lerr)
	}
	if err != nil {
		return fmt.Errorf("copy to %s: %w", where, err)
	}
	return nil
}

// errCopyEnded stops the local tar writer once the sandbox's side is done.
var errCopyEnded = errors.New("the copy ended")

func copyFrom(ctx context.Context, c *client.Client, ns string, src *remoteRef, local string, stdout, stderr io.Writer) error {
	where := src.name + ":" + src.path
	// The stream may only write the entry asked for: SRC's base name, or
	// for a directory's contents (DIR/., "..", "/") whatever is in it. A
	// path naming contents is sent as "P/." so the agent, which knows the
	// working directory msbctl does not, makes a contents stream of it too.
	srcPath, top := src.path, tarcopy.TopName(src.path)
	if top == "." && srcPath != "." && !strings.HasSuffix(srcPath, "/.") {
		srcPath = strings.TrimSuffix(srcPath, "/") + "/."
	}
	if local == "-" {
		if err := c.CopyFromSandbox(ctx, ns, src.name, srcPath, stdout, client.CopyOptions{Warnings: stderr}); err != nil {
			return fmt.Errorf("copy from %s: %w", where, err)
		}
		return nil
	}
	pr, pw := io.Pipe()
	xerr := make(chan error, 1)
	go func() {
		err := tarcopy.Extract(pr, local, tarcopy.Options{Top: top})
		if err != nil {
			pr.CloseWithError(err)
		} else {
			io.Copy(io.Discard, pr) // tar padding after the end marker
		}
		xerr <- err
	}()
	err := c.CopyFromSandbox(ctx, ns, src.name, srcPath, pw, client.CopyOptions{Warnings: stderr})
	pw.CloseWithError(err)
	lerr := <-xerr
	var refused *tarcopy.Error
	switch {
	case errors.As(lerr, &refused):
		return fmt.Errorf("copy from %s to %s: %w", where, local, lerr)
	case err != nil:
		return fmt.Errorf("copy from %s: %w", where, err)
	case lerr != nil:
		return fmt.Errorf("copy from %s to %s: %w", where, local, lerr)
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
