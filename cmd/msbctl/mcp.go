package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"msb.dev/msb/client"
	"msb.dev/msb/client/mcpserver"
)

type mcpOptions struct {
	globalOptions
	ttl time.Duration
}

func (o *mcpOptions) flags() *flagSet {
	fs := newFlagSet("mcp")
	o.register(fs)
	fs.durationVar(&o.ttl, "ttl", "", 0, "lifetime of the sandboxes the session creates when they ask for none, e.g. 1h (0: until deleted)")
	return fs
}

func newMCPCommand(e *env) *cobra.Command {
	o := &mcpOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "mcp [--ttl DURATION]"
	cmd.Short = "Serve the Model Context Protocol on stdio, for AI agents"
	cmd.Long = `Serve MCP (the Model Context Protocol) on standard input and output: what
desktop agents and IDEs launch to use tools. The tools talk to msbd:
sandbox_create, sandbox_exec, sandbox_write_file, sandbox_read_file,
sandbox_list, sandbox_logs and sandbox_delete.

Sandboxes the tools create carry the label msb.dev/mcp=true, so an operator's
NetworkPolicies can select them and 'msbctl delete sb -l msb.dev/mcp=true'
cleans them up. The tools cannot create Secrets or NetworkPolicies, mount host
paths or publish ports. Diagnostics go to standard error.`
	cmd.Example = `  # What an agent's configuration runs
  msbctl mcp --ttl 2h

  # List the sandboxes MCP sessions made
  msbctl get sb -l msb.dev/mcp=true`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runMCP(ctx, c, o, args, stdinReader, e.stdout, e.stderr)
	})
	return cmd
}

func runMCP(ctx context.Context, c *client.Client, o *mcpOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "mcp", "unexpected argument %q", args[0])
	}
	if o.ttl < 0 {
		return usageFail(stderr, "mcp", "--ttl %s: must not be negative", o.ttl)
	}
	srv := mcpserver.New(mcpserver.Options{
		Client:     c,
		Namespace:  o.namespace,
		DefaultTTL: o.ttl,
		Version:    version,
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	var t mcp.Transport = &mcp.IOTransport{Reader: nopCloser{stdin}, Writer: nopWriteCloser{stdout}}
	if stdin == os.Stdin && stdout == os.Stdout {
		t = &mcp.StdioTransport{}
	}
	if err := srv.Run(ctx, t); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) && !errors.Is(err, mcp.ErrConnectionClosed) {
		fmt.Fprintf(stderr, "msbctl mcp: %v\n", err)
		return exitFail
	}
	return exitOK
}

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
