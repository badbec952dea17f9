package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type infoOptions struct {
	globalOptions
	output string
}

func (o *infoOptions) flags() *flagSet {
	fs := newFlagSet("info")
	o.register(fs)
	fs.stringVar(&o.output, "output", "o", "text", "output format: text, yaml or json")
	return fs
}

func newInfoCommand(e *env) *cobra.Command {
	o := &infoOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "info [-o text|yaml|json]"
	cmd.Short = "Show what msbd found on its host: drivers and why not"
	cmd.Long = `Show what msbd found on its host when it started: which sandbox drivers it
runs (microVMs through libkrun, containers through runc) and, for each one it
cannot run, why; which driver isolation: auto picks; and the facts behind
that: the libkrun library it tried and what it loaded, the KVM device, runc
and its version, the cgroup version, user namespaces and nftables.

A line marked "!" is a finding that keeps something from working.`
	cmd.Example = `  # Why are sandboxes not running in microVMs?
  msbctl info

  # The same as JSON, for scripts
  msbctl info -o json`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runInfo(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runInfo(ctx context.Context, c *client.Client, o *infoOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "info", "unexpected argument %q", args[0])
	}
	switch o.output {
	case "text", "yaml", "json":
	default:
		return usageFail(stderr, "info", "unknown output format %q: want one of text, yaml, json", o.output)
	}
	h, err := c.Info(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	switch o.output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(h); err != nil {
			return fail(stderr, err)
		}
	case "yaml":
		b, err := yaml.Marshal(h)
		if err != nil {
			return fail(stderr, err)
		}
		stdout.Write(b)
	default:
		printInfo(stdout, h)
	}
	return exitOK
}

// printInfo writes h as text: the drivers, then every section, each fact
// marked "!" when it keeps something from working.
func printInfo(w io.Writer, h v1alpha1.HostInfo) {
	fmt.Fprintf(w, "Server Version: %s\n", h.Version.Version)
	fmt.Fprintln(w, "Drivers:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, d := range h.Drivers {
		state := "available"
		if !d.Available {
			state = "unavailable"
		}
		note := d.Reason
		if d.Auto {
			note = strings.TrimSpace("isolation auto uses it " + note)
		}
		fmt.Fprintf(tw, "  %s %s\t%s\t%s\t%s\n", mark(d.Available), d.Name, d.Isolation, state, oneLine(note))
	}
	tw.Flush()
	for _, s := range h.Sections {
		fmt.Fprintf(w, "%s:\n", s.Name)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, it := range s.Items {
			line := it.Value
			if it.Detail != "" {
				line += " (" + oneLine(it.Detail) + ")"
			}
			fmt.Fprintf(tw, "  %s %s:\t%s\n", mark(it.OK), it.Name, line)
		}
		tw.Flush()
	}
}

func mark(ok bool) string {
	if ok {
		return " "
	}
	return "!"
}
