package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// newRootCommand builds msbctl's command tree for one run. The root command
// never runs itself: run picks the command out of the command line first
// (global flags may precede it) and hands cobra the line with the name first.
func newRootCommand(e *env) *cobra.Command {
	var g globalOptions
	fs := newFlagSet("")
	g.register(fs)
	root := fs.cmd
	root.Use = "msbctl"
	root.Short = "msbctl controls msbd, the sandbox controller"
	root.CompletionOptions.DisableDefaultCmd = true // ours is newCompletionCommand
	root.SetHelpFunc(func(c *cobra.Command, _ []string) { printHelp(c.OutOrStdout(), c) })
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		name := c.Name()
		if c == root {
			name = ""
		}
		return flagError(name, e.args, err)
	})
	for _, newCommand := range commands {
		root.AddCommand(newCommand(e))
	}
	root.SetHelpCommand(newHelpCommand(e))
	root.InitDefaultHelpCmd()
	return root
}

// newHelpCommand is "msbctl help [COMMAND]". It parses no flags, as before
// cobra: "msbctl help -n x get" shows get's help.
func newHelpCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "Show help for a command",
		Long:  "Show the help page of a command, or of msbctl itself.",
		Example: `  # List the commands
  msbctl help

  # Show the flags and examples of get
  msbctl help get`,
		DisableFlagParsing: true,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var out []cobra.Completion
			for _, sub := range c.Root().Commands() {
				if len(args) == 0 && sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			var names []string
			for _, a := range args {
				if !strings.HasPrefix(a, "-") {
					names = append(names, a)
				}
			}
			root := c.Root()
			if len(names) == 0 {
				printHelp(e.stdout, root)
				return nil
			}
			sub := lookupCommand(root, names[0])
			if sub == nil {
				return usagef("unknown command %q; see 'msbctl --help' for the list of commands", names[0])
			}
			printHelp(e.stdout, sub)
			return nil
		},
	}
}

// exitCodesAnnotation, on a command, replaces the usual exit code line of its help.
const exitCodesAnnotation = "msbctl/exit-codes"

// printHelp writes the help page of c, kubectl style: what it does, usage,
// examples, its flags, the global flags.
func printHelp(w io.Writer, c *cobra.Command) {
	if !c.HasParent() {
		printMainHelp(w, c)
		return
	}
	long := c.Long
	if long == "" {
		long = c.Short + "."
	}
	fmt.Fprintf(w, "%s\n\nUsage:\n  msbctl %s\n", strings.TrimRight(long, "\n"), c.Use)
	if c.Example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	local, global := splitFlags(c.Flags())
	if local.HasFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", local.FlagUsages())
	}
	if global.HasFlags() {
		fmt.Fprintf(w, "\nGlobal Flags:\n%s", global.FlagUsages())
	}
	exit := "Exit codes: 0 success, 1 failure, 2 usage error."
	if s := c.Annotations[exitCodesAnnotation]; s != "" {
		exit = s
	}
	fmt.Fprintf(w, "\n%s\nUse \"msbctl --help\" for the list of commands and resource types.\n", exit)
}

func printMainHelp(w io.Writer, root *cobra.Command) {
	fmt.Fprintf(w, "%s.\n\nUsage:\n  msbctl [global flags] COMMAND [args] [flags]\n\nCommands:\n", root.Short)
	cmds := append([]*cobra.Command(nil), root.Commands()...)
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].Name() < cmds[j].Name() })
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.Name()))
	}
	for _, c := range cmds {
		if c.IsAvailableCommand() || c.Name() == "help" {
			fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name(), c.Short)
		}
	}
	_, global := splitFlags(root.Flags())
	fmt.Fprintf(w, "\nGlobal Flags (before or after the command):\n%s", global.FlagUsages())
	fmt.Fprint(w, `
Resource types: sandbox (sandboxes, sb), networkpolicy (networkpolicies, netpol),
secret (secrets), event (events, ev). KIND/NAME works wherever a name does.

Exit codes: 0 success, 1 failure, 2 usage error; exec exits with the command's code,
diff 1 when something differs, wait and apply --wait 130/143 when interrupted.
Use "msbctl COMMAND --help" for more about a command.
`)
}

// splitFlags parts a command's flags into its own and the global ones.
// --help is left out: every page ends saying how to ask for help.
func splitFlags(all *pflag.FlagSet) (local, global *pflag.FlagSet) {
	local = pflag.NewFlagSet("local", pflag.ContinueOnError)
	global = pflag.NewFlagSet("global", pflag.ContinueOnError)
	all.VisitAll(func(f *pflag.Flag) {
		switch {
		case f.Name == "help":
		case f.Annotations[globalAnnotation] != nil:
			global.AddFlag(f)
		default:
			local.AddFlag(f)
		}
	})
	return local, global
}
