package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// ---- logs ----

type logsOptions struct {
	globalOptions
	follow     bool
	network    bool
	tail       int
	timestamps bool
	since      time.Duration
	previous   bool
}

func (o *logsOptions) flags() *flagSet {
	fs := newFlagSet("logs")
	o.register(fs)
	fs.boolVar(&o.follow, "follow", "f", false, "keep streaming new output until interrupted")
	fs.boolVar(&o.network, "network", "", false, "print the sandbox's network decisions (DNS answers and connections, allowed and denied) instead of its output")
	fs.flags().IntVar(&o.tail, "tail", -1, "print only the last N lines of what the log holds (-1: all), then, with -f, what comes")
	fs.boolVar(&o.timestamps, "timestamps", "", false, "prefix each line with the time it was written (RFC 3339, within a millisecond)")
	fs.durationVar(&o.since, "since", "", 0, "only lines written this recently, e.g. 5m")
	fs.boolVar(&o.previous, "previous", "p", false, "print the output of the run before the current one (before the last restart)")
	return fs
}

func newLogsCommand(e *env) *cobra.Command {
	o := &logsOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "logs NAME|sandbox/NAME [-f] [--tail N] [--timestamps] [--since DURATION] [-p] [--network]"
	cmd.Short = "Print a sandbox's output or its network decisions"
	cmd.Long = `Print what a sandbox's command wrote to its standard output and error, as
msbd keeps it. With -f, keep printing new output until interrupted.

With --network, print instead what msbd's DNS filter and egress proxy decided
for the sandbox, one line each: time, ALLOW or DENY, dns or tcp, the name and
address, and the rule that allowed it or why it was denied. msbd keeps the
most recent decisions of each sandbox.`
	cmd.Example = `  # Print a sandbox's output
  msbctl logs web

  # Follow it
  msbctl logs sb/web -f

  # The last 20 lines, then what comes
  msbctl logs web --tail 20 -f

  # What it wrote in the last five minutes, with the time of each line
  msbctl logs web --since 5m --timestamps

  # What the run before the last restart wrote
  msbctl logs web --previous

  # What it tried to reach, and what policy said
  msbctl logs web --network -f`
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runLogs(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runLogs(ctx context.Context, c *client.Client, o *logsOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		return usageFail(stderr, "logs", "want exactly one sandbox name, got %d arguments", len(args))
	}
	name, err := parseSandboxName(args[0])
	if err != nil {
		return fail(stderr, err)
	}
	if o.tail < -1 {
		return usageFail(stderr, "logs", "--tail %d: want a number of lines, or -1 for all", o.tail)
	}
	if o.network && (o.tail != -1 || o.timestamps || o.since != 0) {
		return usageFail(stderr, "logs", "--tail, --timestamps and --since are for the sandbox's output, not --network")
	}
	if o.follow && o.previous {
		return usageFail(stderr, "logs", "--previous cannot be followed: that run has ended")
	}
	if o.network && o.previous {
		return usageFail(stderr, "logs", "--previous is for the sandbox's output, not --network")
	}
	if o.since < 0 {
		return usageFail(stderr, "logs", "--since must be positive")
	}
	if o.network {
		err = c.NetworkLog(ctx, o.namespace, name, o.follow, func(d v1alpha1.NetworkDecision) error {
			_, werr := io.WriteString(stdout, formatDecision(d))
			return werr
		})
	} else {
		err = c.LogsWith(ctx, o.namespace, name, client.LogOptions{Follow: o.follow, Tail: o.tail, Timestamps: o.timestamps, Since: o.since, Previous: o.previous}, stdout)
	}
	if err != nil {
		if ctx.Err() != nil && o.follow {
			return exitOK // interrupted while following
		}
		if client.IsNotFound(err) {
			return fail(stderr, fmt.Errorf("sandbox %q not found in namespace %q", name, o.namespace))
		}
		return fail(stderr, err)
	}
	return exitOK
}

// formatDecision prints one network decision as a line:
//
//	2026-12-07T01:02:03Z DENY  tcp  evil.example 203.0.113.9:443  no policy allows this name
func formatDecision(d v1alpha1.NetworkDecision) string {
	verdict, why := "ALLOW", d.Rule
	if !d.Allowed {
		verdict, why = "DENY ", d.Reason
	}
	dst := d.Addr
	if d.Port != 0 && dst != "" {
		dst = net.JoinHostPort(dst, strconv.Itoa(int(d.Port)))
	}
	name := d.Name
	if name == "" {
		name = "-"
	}
	if dst == "" {
		dst = "-"
	}
	return fmt.Sprintf("%s %s %-4s %s %s  %s\n", d.Time.UTC().Format(time.RFC3339), verdict, d.Kind, name, dst, why)
}

// ---- exec ----

type execOptions struct {
	globalOptions
	stdin   bool
	tty     bool
	env     []string
	workdir string
}

func (o *execOptions) flags() *flagSet {
	fs := newFlagSet("exec")
	o.register(fs)
	fs.boolVar(&o.stdin, "stdin", "i", false, "pass standard input to the command")
	fs.boolVar(&o.tty, "tty", "t", false, "allocate a terminal for the command")
	fs.sliceVar(&o.env, "env", "e", "set an environment variable, K=V (repeatable)")
	fs.stringVar(&o.workdir, "workdir", "w", "", "working directory of the command")
	// exec NAME CMD ARGS: everything after the command is the command's own.
	fs.endsAtCommand = true
	fs.flags().SetInterspersed(false)
	return fs
}

func newExecCommand(e *env) *cobra.Command {
	o := &execOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "exec NAME|sandbox/NAME [-i] [-t] [-e K=V] [-w DIR] -- CMD [ARGS...]"
	cmd.Short = "Run a command in a running sandbox"
	cmd.Long = `Run a command in a running sandbox, with its output (and, with -i, your
input) streamed. Flags after the command are the command's own.

msbctl exits with the command's exit code. Errors of msbctl itself (sandbox
not found or not running) print "Error: ..." and exit 1. Without -t, ^C is
passed to the command; a second ^C hangs up, which stops it (exit 130).
SIGTERM and SIGHUP end msbctl at once and stop the command (exit 143, 129).
A command killed by the sandbox's memory limit is reported as OOMKilled.`
	cmd.Example = `  # List a sandbox's root directory
  msbctl exec web -- ls -la /

  # Open an interactive shell
  msbctl exec -it web -- sh

  # Feed standard input to the command
  echo hi | msbctl exec -i web -- cat`
	cmd.Annotations = map[string]string{exitCodesAnnotation: "Exit codes: the command's own; 1 when msbctl fails, 2 on a usage error, 130 when interrupted twice, 143 on SIGTERM, 129 on SIGHUP."}
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, true, func(ctx context.Context, c *client.Client, args []string) int {
		return runExec(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runExec(ctx context.Context, c *client.Client, o *execOptions, pos []string, stdout, stderr io.Writer) int {
	if len(pos) == 0 {
		return usageFail(stderr, "exec", "name the sandbox and the command, e.g. msbctl exec web -- ls")
	}
	if len(pos) == 1 {
		return usageFail(stderr, "exec", "no command given: put it after --, e.g. msbctl exec %s -- ls", pos[0])
	}
	name, err := parseSandboxName(pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	for _, e := range o.env {
		if k, _, ok := cutEnv(e); !ok || k == "" {
			return usageFail(stderr, "exec", "-e %q: want K=V", e)
		}
	}
	if err := ttyNeedsTerminal(o.tty, o.stdin, stdinReader); err != nil {
		return fail(stderr, err)
	}
	opts := client.ExecOptions{
		Command:    pos[1:],
		Env:        o.env,
		WorkingDir: o.workdir,
		Stdout:     stdout,
		Stderr:     stderr,
		TTY:        o.tty,
	}
	if o.stdin {
		opts.Stdin = stdinReader
	}
	execCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var aborted atomic.Value // os.Signal: why msbctl hung up
	abort := func(sig os.Signal) { aborted.CompareAndSwap(nil, sig); cancel() }

	if o.tty {
		opts.Term = os.Getenv("TERM")
		if opts.Term == "" {
			opts.Term = "xterm"
		}
		if f, ok := stdinReader.(*os.File); ok && o.stdin && term.IsTerminal(int(f.Fd())) {
			state, err := term.MakeRaw(int(f.Fd()))
			if err != nil {
				return fail(stderr, fmt.Errorf("could not put the terminal in raw mode: %v", err))
			}
			defer term.Restore(int(f.Fd()), state)
		}
		sizeFd := -1
		for _, w := range []any{stdout, stdinReader} {
			if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				sizeFd = int(f.Fd())
				break
			}
		}
		if sizeFd >= 0 {
			if cols, rows, err := term.GetSize(sizeFd); err == nil {
				opts.Rows, opts.Cols = uint16(rows), uint16(cols)
			}
			resize := make(chan v1alpha1.WindowSize, 1)
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, syscall.SIGWINCH)
			defer signal.Stop(winch)
			done := make(chan struct{})
			defer close(done)
			go func() {
				for {
					select {
					case <-done:
						return
					case <-winch:
						if cols, rows, err := term.GetSize(sizeFd); err == nil {
							select {
							case resize <- v1alpha1.WindowSize{Rows: uint16(rows), Cols: uint16(cols)}:
							default: // a resize is pending; the next one catches up
							}
						}
					}
				}
			}()
			opts.Resize = resize
		}
	}
	// ^C goes to the remote command first (without a terminal; with one it
	// is a byte on stdin), a second one hangs up. SIGTERM and SIGHUP end
	// msbctl at once: it hangs up, which kills the remote command.
	sigs, stopSignals := execSignals(abort)
	defer stopSignals()
	if !o.tty {
		opts.Signals = sigs
	}
	var result v1alpha1.ExecResult
	opts.Result = &result

	code, err := c.Exec(execCtx, o.namespace, name, opts)
	if err != nil && aborted.Load() != nil {
		if o.tty {
			fmt.Fprint(stderr, "\r\n")
		}
		return abortedExit(stderr, aborted.Load().(os.Signal))
	}
	if err != nil {
		if client.IsNotFound(err) {
			err = fmt.Errorf("sandbox %q not found in namespace %q", name, o.namespace)
		}
		if o.tty {
			// Raw mode: start the message on a fresh line.
			fmt.Fprint(stderr, "\r\n")
		}
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFail
	}
	if result.Reason == v1alpha1.ExecReasonOOMKilled {
		if o.tty {
			fmt.Fprint(stderr, "\r\n")
		}
		fmt.Fprintf(stderr, "msbctl: the command was killed by the sandbox's memory limit (OOMKilled, exit code %d)\n", code)
	}
	return code
}

// ttyNeedsTerminal refuses -it when standard input is not a terminal (a pipe,
// a file): a remote terminal reads keystrokes and never sees the end of a
// pipe, so the command would wait for input forever. docker refuses the same.
func ttyNeedsTerminal(tty, stdin bool, in io.Reader) error {
	if !tty || !stdin {
		return nil
	}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return usagef("-t asks for a terminal, but standard input is not one (a pipe or a file): " +
		"drop -t to pass input through, e.g. echo ls | msbctl exec -i NAME -- sh")
}

func cutEnv(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// ---- version ----

type versionOptions struct{ globalOptions }

func (o *versionOptions) flags() *flagSet {
	fs := newFlagSet("version")
	o.register(fs)
	return fs
}

func newVersionCommand(e *env) *cobra.Command {
	o := &versionOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "version"
	cmd.Short = "Print the client and server versions"
	cmd.Long = `Print msbctl's version, then msbd's: its version, the Go it was built with,
and the driver and isolation it runs sandboxes with.`
	cmd.Example = `  # Print both versions
  msbctl version`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runVersion(ctx, c, args, e.stdout, e.stderr)
	})
	return cmd
}

func runVersion(ctx context.Context, c *client.Client, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "version", "unexpected argument %q", args[0])
	}
	fmt.Fprintf(stdout, "Client Version: %s\n", version)
	v, err := c.Version(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "Server Version: %s\n", v.Version)
	if v.GoVersion != "" {
		fmt.Fprintf(stdout, "Server Go Version: %s\n", v.GoVersion)
	}
	if v.Driver != "" {
		fmt.Fprintf(stdout, "Server Driver: %s\n", v.Driver)
	}
	if v.Isolation != "" {
		fmt.Fprintf(stdout, "Server Isolation: %s\n", v.Isolation)
	}
	return exitOK
}
