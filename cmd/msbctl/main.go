// Command msbctl is the command-line client of msbd, shaped like kubectl:
// apply, get, describe, delete, diff, wait, logs, exec, events, image and version.
// It talks to msbd only through package client, over the API socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

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

// runFunc runs one command: args are everything after the command name,
// flags included (global ones too); it returns the process exit code.
type runFunc func(ctx context.Context, c *client.Client, args []string, stdout, stderr io.Writer) int

type command struct {
	name    string
	aliases []string
	summary string
	usage   string // synopsis after "msbctl "
	help    string // description and examples
	flags   func() *flagSet
	run     runFunc
	// interruptible commands end on SIGINT; exec forwards it instead.
	forwardsSignals bool
}

var commands []*command

func init() {
	commands = []*command{
		applyCommand, getCommand, describeCommand, deleteCommand, diffCommand,
		waitCommand, logsCommand, execCommand, eventsCommand, versionCommand,
		imageCommand, imagesCommand,
	}
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
		for _, a := range c.aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// globalOptions are accepted by every command, before or after its name.
type globalOptions struct {
	socket        string
	namespace     string
	allNamespaces bool
}

func (g *globalOptions) register(fs *flagSet) {
	fs.stringVar(&g.socket, "socket", "", "", "path of the msbd API socket (env MSB_SOCKET; default "+client.DefaultSocket+")")
	fs.stringVar(&g.namespace, "namespace", "n", "default", "namespace to work in")
	fs.boolVar(&g.allNamespaces, "all-namespaces", "A", false, "work across all namespaces")
}

// listNamespace is the namespace to list in: "" across all.
func (g *globalOptions) listNamespace() string {
	if g.allNamespaces {
		return ""
	}
	return g.namespace
}

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

// run is msbctl as a function, so tests can drive it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	idx := findCommand(args)
	if idx < 0 {
		for _, a := range args {
			if a == "--" {
				break
			}
			if a == "-h" || a == "--help" {
				printMainHelp(stdout)
				return exitOK
			}
		}
		if len(args) == 0 {
			printMainHelp(stdout)
			return exitOK
		}
		fmt.Fprintln(stderr, "error: no command given; see 'msbctl --help'")
		return exitUsage
	}
	name := args[idx]
	rest := append(append([]string(nil), args[:idx]...), args[idx+1:]...)
	if name == "help" {
		return runHelp(rest, stdout, stderr)
	}
	cmd := lookupCommand(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "error: unknown command %q; see 'msbctl --help' for the list of commands\n", name)
		return exitUsage
	}
	// Parse once here for --socket and usage errors; the command parses again.
	fs := cmd.flags()
	if err := fs.parse(rest); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitUsage
	}
	if fs.help {
		printCommandHelp(stdout, cmd)
		return exitOK
	}
	c := client.New(socketPath(fs.long["socket"].value.String()))
	if !cmd.forwardsSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return cmd.run(ctx, c, rest, stdout, stderr)
}

// findCommand returns the index of the command name in args: the first
// positional argument, skipping flags and their values. -1 if there is none.
func findCommand(args []string) int {
	all := allFlags()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			return i
		}
		if all.takesValue(a) && i+1 < len(args) {
			// A flag that is boolean for some commands (-w, -f) is taken as
			// boolean when a command name follows it.
			if (lookupCommand(args[i+1]) != nil || args[i+1] == "help") && all.boolSomewhere(a) {
				continue
			}
			i++
		}
	}
	return -1
}

// unionFlags knows every flag of every command, to find the command name.
type unionFlags struct{ sets []*flagSet }

func allFlags() unionFlags {
	var u unionFlags
	for _, c := range commands {
		u.sets = append(u.sets, c.flags())
	}
	return u
}

func (u unionFlags) takesValue(tok string) bool {
	for _, fs := range u.sets {
		if fs.takesValue(tok) {
			return true
		}
	}
	return false
}

func (u unionFlags) boolSomewhere(tok string) bool {
	for _, fs := range u.sets {
		var d *flagDef
		if strings.HasPrefix(tok, "--") {
			d = fs.long[tok[2:]]
		} else if len(tok) == 2 {
			d = fs.short[tok[1:]]
		}
		if d != nil && d.isBool {
			return true
		}
	}
	return false
}

// parseFlags parses a command's args; ok is false when the command must
// return code at once (help was asked for, or the command line is wrong).
func parseFlags(fs *flagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if err := fs.parse(args); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitUsage, false
	}
	if fs.help {
		if cmd := lookupCommand(fs.cmd); cmd != nil {
			printCommandHelp(stdout, cmd)
		}
		return exitOK, false
	}
	return exitOK, true
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

func printMainHelp(w io.Writer) {
	fmt.Fprint(w, `msbctl controls msbd, the sandbox controller.

Usage:
  msbctl [global flags] COMMAND [args] [flags]

Commands:
`)
	cmds := append([]*command(nil), commands...)
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "help", "show help for a command")
	fmt.Fprint(w, `
Global flags (before or after the command):
`)
	fs := newFlagSet("")
	var g globalOptions
	g.register(fs)
	fs.printDefaults(w)
	fmt.Fprint(w, `
Resource types: sandbox (sandboxes, sb), networkpolicy (networkpolicies, netpol),
secret (secrets), event (events, ev). KIND/NAME works wherever a name does.

Exit codes: 0 success, 1 failure, 2 usage error; exec exits with the command's code.
Use "msbctl COMMAND --help" for more about a command.
`)
}

func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  msbctl %s\n", c.summary, c.usage)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.help, "\n"))
	}
	fmt.Fprint(w, "\nFlags:\n")
	c.flags().printDefaults(w)
	fmt.Fprint(w, "\nExit codes: 0 success, 1 failure, 2 usage error.\n")
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	var names []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			names = append(names, a)
		}
	}
	if len(names) == 0 {
		printMainHelp(stdout)
		return exitOK
	}
	c := lookupCommand(names[0])
	if c == nil {
		fmt.Fprintf(stderr, "error: unknown command %q; see 'msbctl --help' for the list of commands\n", names[0])
		return exitUsage
	}
	printCommandHelp(stdout, c)
	return exitOK
}
