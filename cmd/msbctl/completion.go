package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// Shell completion: cobra generates the scripts and, at every <TAB>, runs
// "msbctl __complete ARGS..." which calls the functions below. Names come
// from msbd; when it cannot be reached (or takes longer than
// completionTimeout) a function offers nothing, quietly, and never files:
// a list of local files is no answer to "which sandbox?".

// completionTimeout bounds each question completion asks msbd: a person is
// waiting at the prompt.
const completionTimeout = 2 * time.Second

const noFiles = cobra.ShellCompDirectiveNoFileComp

var shells = []string{"bash", "zsh", "fish", "powershell"}

func newCompletionCommand(e *env) *cobra.Command {
	var g globalOptions
	fs := newFlagSet("completion")
	g.register(fs)
	cmd := fs.cmd
	cmd.Use = "completion bash|zsh|fish|powershell"
	cmd.Short = "Print a shell completion script"
	cmd.Long = `Print a script that teaches the shell to complete msbctl's commands, flags
and resource types, and the names of objects as msbd knows them right now:
"msbctl get sandbox <TAB>" lists the sandboxes of the namespace given with -n
(or "default"). When msbd cannot be reached, nothing is offered.

Bash needs the bash-completion package.`
	cmd.Example = `  # Load completion into the current bash session
  source <(msbctl completion bash)

  # Load it in every bash session
  msbctl completion bash > /etc/bash_completion.d/msbctl

  # zsh: put the script on the fpath (compinit must run)
  msbctl completion zsh > "${fpath[1]}/_msbctl"

  # fish
  msbctl completion fish > ~/.config/fish/completions/msbctl.fish`
	cmd.ValidArgs = shells
	cmd.RunE = e.action(fs, &g, false, func(_ context.Context, _ *client.Client, args []string) int {
		if len(args) != 1 {
			return usageFail(e.stderr, "completion", "name one shell: %s", strings.Join(shells, ", "))
		}
		root := cmd.Root()
		var err error
		switch args[0] {
		case "bash":
			err = root.GenBashCompletionV2(e.stdout, true)
		case "zsh":
			err = root.GenZshCompletion(e.stdout)
		case "fish":
			err = root.GenFishCompletion(e.stdout, true)
		case "powershell":
			err = root.GenPowerShellCompletionWithDesc(e.stdout)
		default:
			return usageFail(e.stderr, "completion", "unknown shell %q: want %s", args[0], strings.Join(shells, ", "))
		}
		if err != nil {
			return fail(e.stderr, err)
		}
		return exitOK
	})
	return cmd
}

// completionContext is ctx (which cobra may leave nil) bounded by completionTimeout.
func completionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, completionTimeout)
}

// objectNames lists the names of kind in g's namespace that start with
// toComplete, leaving out those in skip, each behind prefix ("sandbox/" for
// the KIND/NAME form). A Sandbox's phase comes along as its description.
func objectNames(ctx context.Context, g *globalOptions, ki v1alpha1.KindInfo, skip []string, prefix, toComplete string) []cobra.Completion {
	ctx, cancel := completionContext(ctx)
	defer cancel()
	objs, _, err := g.client().List(ctx, ki.Kind, g.namespace, "")
	if err != nil {
		return nil
	}
	sortObjects(objs)
	given := map[string]bool{}
	for _, s := range skip {
		given[s] = true
	}
	var out []cobra.Completion
	for _, obj := range objs {
		name := prefix + obj.GetMetadata().Name
		if given[name] || !strings.HasPrefix(name, toComplete) {
			continue
		}
		if sb, ok := obj.(*v1alpha1.Sandbox); ok && sb.Status.Phase != "" {
			out = append(out, cobra.CompletionWithDesc(name, string(sb.Status.Phase)))
			continue
		}
		out = append(out, name)
	}
	return out
}

// kindNames offers the resource types among kinds (Kind names) that start
// with toComplete: their plurals when nothing is typed yet, and every name
// of theirs (singular, plural, short) once something is.
func kindNames(kinds []string, toComplete string) []cobra.Completion {
	var out []cobra.Completion
	for _, k := range kinds {
		ki, err := v1alpha1.LookupKind(k)
		if err != nil {
			continue
		}
		names := []string{ki.Plural}
		if toComplete != "" {
			names = append(append(names, ki.Singular), ki.ShortNames...)
		}
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
	}
	return out
}

// completeKindName completes one KIND/NAME: the kind up to its slash, then
// the names of that kind.
func completeKindName(ctx context.Context, g *globalOptions, kinds []string, skip []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	k, _, ok := strings.Cut(toComplete, "/")
	if !ok {
		var out []cobra.Completion
		for _, n := range kindNames(kinds, toComplete) {
			out = append(out, n+"/")
		}
		return out, noFiles | cobra.ShellCompDirectiveNoSpace
	}
	ki, err := v1alpha1.LookupKind(k)
	if err != nil {
		return nil, noFiles
	}
	return objectNames(ctx, g, ki, skip, k+"/", toComplete), noFiles
}

// completeRefs completes the arguments of get, describe, delete and wait:
// KIND [NAME...] or KIND/NAME..., kinds being the resource types that make
// sense for the command.
func completeRefs(g *globalOptions, kinds []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx := cmd.Context()
		if len(args) == 0 && !strings.Contains(toComplete, "/") {
			return kindNames(kinds, toComplete), noFiles
		}
		if len(args) == 0 || strings.Contains(args[0], "/") {
			return completeKindName(ctx, g, kinds, args, toComplete)
		}
		ki, err := v1alpha1.LookupKind(args[0])
		if err != nil {
			return nil, noFiles
		}
		return objectNames(ctx, g, ki, args[1:], "", toComplete), noFiles
	}
}

// completeSandbox completes the one sandbox logs and exec take, NAME or sandbox/NAME.
func completeSandbox(g *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, noFiles
		}
		if strings.Contains(toComplete, "/") {
			return completeKindName(cmd.Context(), g, []string{v1alpha1.KindSandbox}, nil, toComplete)
		}
		ki, _ := v1alpha1.LookupKind(v1alpha1.KindSandbox)
		return objectNames(cmd.Context(), g, ki, nil, "", toComplete), noFiles
	}
}

// completeNamespaces offers the namespaces that hold a Sandbox, NetworkPolicy
// or Secret, and "default": the API has no list of namespaces, and three
// lists on one host are cheap. Nothing when msbd cannot be asked.
func completeNamespaces(g *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := completionContext(cmd.Context())
		defer cancel()
		c := g.client()
		seen := map[string]bool{"default": true}
		for _, kind := range []string{v1alpha1.KindSandbox, v1alpha1.KindNetworkPolicy, v1alpha1.KindSecret} {
			objs, _, err := c.List(ctx, kind, "", "")
			if err != nil {
				return nil, noFiles
			}
			for _, o := range objs {
				seen[o.GetMetadata().Namespace] = true
			}
		}
		var out []cobra.Completion
		for ns := range seen {
			if strings.HasPrefix(ns, toComplete) {
				out = append(out, ns)
			}
		}
		sort.Strings(out)
		return out, noFiles
	}
}

// fixedValues completes a flag from a fixed list of values.
func fixedValues(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, noFiles)
}

// manifestFlag marks -f as taking manifest files (or directories).
func manifestFlag(fs *flagSet) {
	fs.cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
}
