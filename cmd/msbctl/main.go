// Command msbctl is the command-line client of msbd, shaped like kubectl:
// apply, get, describe, delete, diff, wait, logs, exec, events, image,
// version and completion. It talks to msbd only through package client, over
// the API socket. Commands, flags, help and shell completion are cobra's and
// pflag's; msbctl keeps its own error wording and exit codes on top of them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"msb.dev/msb/client"
)

// version is msbctl's own version, set at build time with
// -ldflags "-X main.version=v0.1.0".
var version = "v0.1.0-dev"

// Exit codes: 0 success, 1 a failure (not found, invalid manifest, timeout,
// server error), 2 a usage error (unknown command or flag, missing argument).
// exec exits with the remote command's code instead.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// stdinReader is what "-f -" and "exec -i" read; tests replace it.
var stdinReader io.Reader = os.Stdin

// commands builds every command of msbctl, in the order of no importance
// (help lists them sorted). Each run of msbctl builds a fresh tree, so flag
// values never leak from one run to the next (tests run many in one process).
var commands = []func(*env) *cobra.Command{
	newApplyCommand, newGetCommand, newDescribeCommand, newDeleteCommand, newDiffCommand,
	newWaitCommand, newLogsCommand, newExecCommand, newCpCommand, newMCPCommand, newEventsCommand, newVersionCommand,
	newImageCommand, newImagesCommand, newCompletionCommand, newInfoCommand,
	// issue 8's commands (cli)
	newSuspendCommand, newResumeCommand, newRestartCommand, newRunCommand, newTopCommand, newPortForwardCommand,
}

// globalOptions are accepted by every command, before or after its name.
type globalOptions struct {
	socket        string
	namespace     string
	allNamespaces bool
	fs            *flagSet // the flags these were registered in, for changed
}

func (g *globalOptions) register(fs *flagSet) {
	g.fs = fs
	fs.stringVar(&g.socket, "socket", "", "", "path of the msbd API socket (env MSB_SOCKET; default "+client.DefaultSocket+")")
	fs.stringVar(&g.namespace, "namespace", "n", "default", "namespace to work in")
	fs.boolVar(&g.allNamespaces, "all-namespaces", "A", false, "work across all namespaces")
	for _, name := range globalFlagNames {
		fs.flags().SetAnnotation(name, globalAnnotation, []string{"true"})
	}
	fs.cmd.RegisterFlagCompletionFunc("namespace", completeNamespaces(g))
}

// globalFlagNames are the flags globalOptions registers; help lists them
// apart, under "Global Flags".
var globalFlagNames = []string{"socket", "namespace", "all-namespaces"}

const globalAnnotation = "msbctl/global"

// changed reports whether the flag named long was given on the command line.
func (g *globalOptions) changed(long string) bool { return g.fs != nil && g.fs.changed(long) }

// listNamespace is the namespace to list in: "" across all.
func (g *globalOptions) listNamespace() string {
	if g.allNamespaces {
		return ""
	}
	return g.namespace
}

func (g *globalOptions) client() *client.Client { return client.New(socketPath(g.socket)) }

func socketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv("MSB_SOCKET"); s != "" {
		return s
	}
	return client.DefaultSocket
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// env is where one run of msbctl writes, and the command line it was given.
type env struct {
	stdout, stderr io.Writer
	args           []string
}

// exitCode carries a command's exit code out of cobra, which knows only errors.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// runFunc runs one command on its positional arguments (flags are parsed
// into its options already) and returns the process exit code.
type runFunc func(ctx context.Context, c *client.Client, args []string) int

// action adapts a runFunc to cobra's RunE: it finishes the flags (exec's),
// answers --help, connects the client and, unless the command forwards
// signals itself (exec), lets ^C and SIGTERM cancel ctx.
func (e *env) action(fs *flagSet, g *globalOptions, forwardsSignals bool, run runFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		fs.raw = e.args
		if err := fs.finish(args); err != nil {
			return err
		}
		if fs.help {
			cmd.HelpFunc()(cmd, nil)
			return nil
		}
		ctx := cmd.Context()
		if !forwardsSignals {
			var stop func()
			ctx, stop = notifyContext(ctx)
			defer stop()
		}
		if code := run(ctx, g.client(), fs.args()); code != exitOK {
			return exitCode(code)
		}
		return nil
	}
}

// run is msbctl as a function, so tests can drive it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, args: args}
	root := newRootCommand(e)
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		// The shell asks for completions: cobra reads that command line as is.
		return e.execute(ctx, root, args)
	}
	idx := findCommandIn(root, args)
	if idx < 0 {
		for _, a := range args {
			if a == "--" {
				break
			}
			if a == "-h" || a == "--help" {
				printHelp(stdout, root)
				return exitOK
			}
		}
		if len(args) == 0 {
			printHelp(stdout, root)
			return exitOK
		}
		fmt.Fprintln(stderr, "error: no command given; see 'msbctl --help'")
		return exitUsage
	}
	name := args[idx]
	if lookupCommand(root, name) == nil {
		fmt.Fprintf(stderr, "error: unknown command %q; see 'msbctl --help' for the list of commands\n", name)
		return exitUsage
	}
	// Global flags may come before the command's name; cobra wants the name
	// first and parses every flag with the command's own set, which has them.
	rest := append(append([]string{name}, args[:idx]...), args[idx+1:]...)
	e.args = rest
	return e.execute(ctx, root, rest)
}

// execute runs the command line args on root and turns what comes back
// into msbctl's exit code and error message.
func (e *env) execute(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetIn(stdinReader)
	_, err := root.ExecuteContextC(ctx)
	var code exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &code):
		return int(code)
	}
	fmt.Fprintf(e.stderr, "error: %v\n", err)
	return exitUsage
}

func lookupCommand(root *cobra.Command, name string) *cobra.Command {
	for _, c := range root.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

// findCommand returns the index of the command name in args: the first
// positional argument, skipping flags and their values. -1 if there is none.
func findCommand(args []string) int {
	return findCommandIn(newRootCommand(&env{stdout: io.Discard, stderr: io.Discard}), args)
}

// findCommandIn is findCommand for the commands under root. A flag is looked
// up in every command, since any command's flags may come before its name.
func findCommandIn(root *cobra.Command, args []string) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			return i
		}
		takes, boolSomewhere := flagShape(root, a)
		if takes && i+1 < len(args) {
			// A flag that is boolean for some commands (-w, -f) is taken as
			// boolean when a command name follows it.
			if lookupCommand(root, args[i+1]) != nil && boolSomewhere {
				continue
			}
			i++
		}
	}
	return -1
}

// flagShape says whether tok, a flag given without "=value", takes the next
// argument as its value in some command, and whether it is boolean in some.
// -oyaml carries its value and -it clusters booleans: neither takes one.
func flagShape(root *cobra.Command, tok string) (takesValue, isBool bool) {
	if strings.Contains(tok, "=") || (!strings.HasPrefix(tok, "--") && len(tok) != 2) {
		return false, false
	}
	long, isLong := strings.CutPrefix(tok, "--")
	for _, c := range root.Commands() {
		var f *pflag.Flag
		if isLong {
			f = c.Flags().Lookup(long)
		} else {
			f = c.Flags().ShorthandLookup(tok[1:])
		}
		switch {
		case f == nil:
		case f.NoOptDefVal == "":
			takesValue = true
		case f.Value.Type() == "bool":
			isBool = true
		}
	}
	return takesValue, isBool
}

func usageFail(stderr io.Writer, cmd string, format string, a ...any) int {
	fmt.Fprintf(stderr, "error: %s; see 'msbctl %s --help'\n", fmt.Sprintf(format, a...), cmd)
	return exitUsage
}

// fail prints err as msbctl's errors look and returns exit code 1.
func fail(stderr io.Writer, err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ae *client.APIError
	if errors.As(err, &ae) {
		for _, d := range ae.Details {
			fmt.Fprintf(stderr, "  %s\n", d)
		}
	}
	return exitFail
}
