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

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/client/mcpserver"
)

type mcpOptions struct {
	globalOptions
	ttl          time.Duration
	allSandboxes bool
	maxMemory    string
	maxCPUs      string
	maxDisk      string
	maxPIDs      int64
}

func (o *mcpOptions) flags() *flagSet {
	fs := newFlagSet("mcp")
	o.register(fs)
	fs.durationVar(&o.ttl, "ttl", "", 0, "lifetime of the sandboxes the session creates when they ask for none, e.g. 1h (0: until deleted)")
	fs.boolVar(&o.allSandboxes, "all-sandboxes", "", false, "let the tools exec in, read, write and delete every sandbox in the namespace, not only the ones MCP sessions created")
	fs.stringVar(&o.maxMemory, "max-memory", "", mcpserver.DefaultMaxMemory, "most memory a created sandbox may ask for (and what it gets when it asks for none)")
	fs.stringVar(&o.maxCPUs, "max-cpus", "", mcpserver.DefaultMaxCPUs, "most CPUs a created sandbox may ask for (and what it gets when it asks for none)")
	fs.stringVar(&o.maxDisk, "max-disk", "", mcpserver.DefaultMaxDisk, "most disk (writable files) a created sandbox may ask for (and what it gets when it asks for none)")
	fs.flags().Int64Var(&o.maxPIDs, "max-pids", mcpserver.DefaultMaxPIDs, "most processes a created sandbox may ask for (and what it gets when it asks for none)")
	return fs
}

func newMCPCommand(e *env) *cobra.Command {
	o := &mcpOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "mcp [--ttl DURATION] [--all-sandboxes] [--max-memory Q] [--max-cpus Q] [--max-pids N] [--max-disk Q]"
	cmd.Short = "Serve the Model Context Protocol on stdio, for AI agents"
	cmd.Long = `Serve MCP (the Model Context Protocol) on standard input and output: what
desktop agents and IDEs launch to use tools. The tools talk to msbd:
sandbox_create, sandbox_exec, sandbox_write_file, sandbox_read_file,
sandbox_list, sandbox_logs and sandbox_delete.

Sandboxes the tools create carry the label msb.dev/mcp=true, so an operator's
NetworkPolicies can select them and 'msbctl delete sb -l msb.dev/mcp=true'
cleans them up. The tools cannot create Secrets or NetworkPolicies, mount host
paths, use images from host paths (oci:, oci-archive:, docker-archive:) or
publish ports. Labels an agent gives are stored under mcp.msb.dev/, so they never
select a NetworkPolicy (do not write policies that select mcp.msb.dev/ keys).

The tools exec in, read, write, show logs of and delete only sandboxes MCP
sessions created (msb.dev/mcp=true), and sandbox_list lists only those:
--all-sandboxes extends them to every sandbox in the namespace, including
ones with host volumes or Secrets. Created sandboxes get at most --max-memory,
--max-cpus, --max-pids and --max-disk (and those when they ask for none). Diagnostics go
to standard error.`
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
	lim := mcpserver.Limits{Memory: v1alpha1.Quantity(o.maxMemory), CPUs: v1alpha1.Quantity(o.maxCPUs), PIDs: o.maxPIDs, Disk: v1alpha1.Quantity(o.maxDisk)}
	if err := lim.Validate("max-"); err != nil {
		return usageFail(stderr, "mcp", "%v", err)
	}
	if o.maxPIDs <= 0 {
		return usageFail(stderr, "mcp", "--max-pids %d: must be more than 0", o.maxPIDs)
	}
	srv := mcpserver.New(mcpserver.Options{
		Client:       c,
		Namespace:    o.namespace,
		DefaultTTL:   o.ttl,
		AllSandboxes: o.allSandboxes,
		Limits:       lim,
		Version:      version,
		Logger:       slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
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
