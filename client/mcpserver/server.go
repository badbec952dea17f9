package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/client"
)

// LabelCreatedBy marks the Sandboxes an MCP session created (value "true"),
// so they can be listed (msbctl get sb -l msb.dev/mcp=true), selected by an
// operator's NetworkPolicies and cleaned up.
const LabelCreatedBy = "msb.dev/mcp"

// Limits of what one tool call returns or accepts.
const (
	MaxOutput      = 1 << 20  // stdout and stderr of sandbox_exec, each
	MaxFileRead    = 1 << 20  // sandbox_read_file, default and most
	MaxFileWrite   = 16 << 20 // sandbox_write_file content, decoded
	DefaultTimeout = 60 * time.Second
	MaxTimeout     = time.Hour
	DefaultTail    = 100
)

// Options configure the server.
type Options struct {
	// Client talks to msbd.
	Client *client.Client
	// Namespace the tools work in ("" = default).
	Namespace string
	// DefaultTTL is the lifetime of a created Sandbox that asks for none
	// (0 = it lives until deleted).
	DefaultTTL time.Duration
	// AllSandboxes lets the tools act on every sandbox in the namespace, not
	// only the ones MCP sessions created (msbctl mcp --all-sandboxes).
	AllSandboxes bool
	// Limits cap what sandbox_create may ask for (zero: the defaults).
	Limits Limits
	// ReadyTimeout bounds sandbox_create's wait for Ready (0 = 2 minutes).
	ReadyTimeout time.Duration
	// Version is reported to clients.
	Version string
	Logger  *slog.Logger
}

type server struct {
	c   *client.Client
	ns  string
	opt Options
}

// New returns an MCP server with the sandbox_* tools.
func New(o Options) *mcp.Server {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	o.Limits = o.Limits.withDefaults()
	s := &server{c: o.Client, ns: o.Namespace, opt: o}
	srv := mcp.NewServer(&mcp.Implementation{Name: "msb", Title: "msb sandboxes", Version: o.Version}, &mcp.ServerOptions{
		Instructions: "Run untrusted code in isolated msb sandboxes: create one with sandbox_create, " +
			"run commands with sandbox_exec, move files with sandbox_write_file and sandbox_read_file, " +
			"and delete it with sandbox_delete when done. Network access is whatever the operator's policies allow. " +
			"The tools act only on sandboxes MCP sessions created.",
		Logger: o.Logger,
	})
	mcp.AddTool(srv, &mcp.Tool{
		Name: "sandbox_create",
		Description: "Create a sandbox (an isolated Linux environment) from a registry image and wait until it is ready. " +
			"Returns its name, used by every other tool. The sandbox keeps running its command (default: sleep forever) " +
			"until deleted or its ttl passes. Its network access is set by the operator's policies. " +
			"Labels are plain names stored under " + ClientLabelPrefix + " (project=x becomes " + ClientLabelPrefix + "project=x), so they never choose a policy. " +
			fmt.Sprintf("Resources are capped at memory %s, cpus %s, pids %d, disk %s (the caps when not given).", o.Limits.Memory, o.Limits.CPUs, o.Limits.PIDs, o.Limits.Disk),
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, safe("sandbox_create", s.create))
	mcp.AddTool(srv, &mcp.Tool{
		Name: "sandbox_exec",
		Description: "Run a command in a sandbox and return its stdout, stderr and exit code. " +
			"command is a string run with sh -c, or an argv array run as is. stdout and stderr are cut at 1 MiB each " +
			"(flagged); bytes that are not UTF-8 show as U+FFFD. The command is killed after timeoutSeconds (default 60).",
		InputSchema: execSchema(),
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: ptr(false)},
	}, safe("sandbox_exec", s.exec))
	mcp.AddTool(srv, &mcp.Tool{
		Name: "sandbox_write_file",
		Description: "Write a file in a sandbox, replacing it if it exists. content is text, or base64 with encoding=base64 " +
			"for binary data (at most 16 MiB). The directory must exist (make it with sandbox_exec mkdir -p).",
		Annotations: &mcp.ToolAnnotations{OpenWorldHint: ptr(false)},
	}, safe("sandbox_write_file", s.writeFile))
	mcp.AddTool(srv, &mcp.Tool{
		Name: "sandbox_read_file",
		Description: "Read a file from a sandbox. Text comes back as is; anything that is not UTF-8 comes back base64 " +
			"with encoding=base64. At most maxBytes (default and most 1 MiB) are returned, flagged truncated.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, safe("sandbox_read_file", s.readFile))
	mcp.AddTool(srv, &mcp.Tool{
		Name:        "sandbox_list",
		Description: "List the sandboxes MCP sessions created (all sandboxes if the operator allowed it): name, phase, whether ready, image.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, safe("sandbox_list", s.list))
	mcp.AddTool(srv, &mcp.Tool{
		Name:        "sandbox_logs",
		Description: "Return the last lines (tail, default 100) of what a sandbox's main command printed.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, safe("sandbox_logs", s.logs))
	mcp.AddTool(srv, &mcp.Tool{
		Name:        "sandbox_delete",
		Description: "Delete a sandbox and everything in it, and wait until it is gone.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
	}, safe("sandbox_delete", s.delete))
	return srv
}

func ptr[T any](v T) *T { return &v }

// safe turns a panic in a tool into that call's tool error: neither msbctl
// mcp nor msbd (which serves the same tools) may go down with one call.
func safe[In, Out any](name string, h mcp.ToolHandlerFor[In, Out]) mcp.ToolHandlerFor[In, Out] {
	return func(ctx context.Context, req *mcp.CallToolRequest, in In) (res *mcp.CallToolResult, out Out, err error) {
		defer func() {
			if p := recover(); p != nil {
				var zero Out
				res, out, err = nil, zero, fmt.Errorf("%s: internal error: %v", name, p)
			}
		}()
		return h(ctx, req, in)
	}
}

// execSchema is sandbox_exec's input schema: command is a string or an
// array of strings, which Go's types cannot say.
func execSchema() *jsonschema.Schema {
	sch, err := jsonschema.For[ExecInput](nil)
	if err != nil {
		panic(err)
	}
	sch.Properties["command"] = &jsonschema.Schema{
		Types:       []string{"string", "array"},
		Items:       &jsonschema.Schema{Type: "string"},
		Description: `the command: a string is run with sh -c ("ls -la /tmp | head"), an array is the exact argv (["python3", "-c", "print(1)"])`,
	}
	return sch
}

// toolError makes err a message an agent can act on: msbd's own message,
// with what was not found named.
func (s *server) toolError(what, name string, err error) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("%s: sandbox %q not found in namespace %q (sandbox_list shows the sandboxes)", what, name, s.ns)
	}
	var ae *client.APIError
	if errors.As(err, &ae) && len(ae.Details) > 0 {
		return fmt.Errorf("%s: %s: %s", what, ae.Message, strings.Join(ae.Details, "; "))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: timed out", what)
	}
	return fmt.Errorf("%s: %v", what, err)
}

func text(format string, a ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, a...)}}}
}
