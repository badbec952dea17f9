package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type topOptions struct {
	globalOptions
	selector string
	interval time.Duration
}

func (o *topOptions) flags() *flagSet {
	fs := newFlagSet("top")
	o.register(fs)
	fs.stringVar(&o.selector, "selector", "l", "", "label selector, e.g. app=agent")
	fs.durationVar(&o.interval, "interval", "", time.Second, "CPU use is measured over this long")
	return fs
}

func newTopCommand(e *env) *cobra.Command {
	o := &topOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "top [NAME...] [-l SELECTOR] [-n NS | -A] [--interval=1s]"
	cmd.Short = "Show running sandboxes' CPU, memory and process use against their limits"
	cmd.Long = `Show the live resource use of running sandboxes, read by msbd from their
cgroups: CPU (in thousandths of a CPU, measured over --interval), memory and
processes, each against the sandbox's limit with the share used. "-" is no
limit.`
	cmd.Example = `  # Every running sandbox of the namespace
  msbctl top

  # Two sandboxes, CPU measured over five seconds
  msbctl top web worker --interval 5s`
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runTop(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runTop(ctx context.Context, c *client.Client, o *topOptions, args []string, stdout, stderr io.Writer) int {
	if o.interval <= 0 {
		return usageFail(stderr, "top", "--interval must be positive")
	}
	type target struct{ ns, name string }
	var targets []target
	code := exitOK
	if len(args) > 0 {
		if o.allNamespaces {
			return usageFail(stderr, "top", "-A cannot be used with names: a name is looked up in one namespace (-n)")
		}
		for _, a := range args {
			name, err := parseSandboxName(a)
			if err != nil {
				return fail(stderr, err)
			}
			targets = append(targets, target{o.namespace, name})
		}
	} else {
		objs, _, err := c.List(ctx, v1alpha1.KindSandbox, o.listNamespace(), o.selector)
		if err != nil {
			return fail(stderr, err)
		}
		sortObjects(objs)
		for _, obj := range objs {
			sb := obj.(*v1alpha1.Sandbox)
			if sb.Status.Phase == v1alpha1.PhaseRunning && sb.Status.PID != 0 {
				targets = append(targets, target{sb.Metadata.Namespace, sb.Metadata.Name})
			}
		}
		if len(targets) == 0 {
			fmt.Fprintln(stderr, "No running sandboxes.")
			return exitOK
		}
	}
	first := make([]*v1alpha1.SandboxStats, len(targets))
	for i, t := range targets {
		st, err := c.Stats(ctx, t.ns, t.name)
		if err != nil {
			if client.IsNotFound(err) {
				err = fmt.Errorf("sandbox %q not found in namespace %q", t.name, t.ns)
			}
			fmt.Fprintf(stderr, "Error: %v\n", err)
			code = exitFail
			continue
		}
		first[i] = &st
	}
	select {
	case <-ctx.Done():
		return exitFail
	case <-time.After(o.interval):
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 3, ' ', 0)
	if o.allNamespaces {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprintln(tw, "NAME\tCPU\tMEMORY\tPIDS")
	for i, t := range targets {
		if first[i] == nil {
			continue
		}
		st, err := c.Stats(ctx, t.ns, t.name)
		if err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			code = exitFail
			continue
		}
		milli := int64(0)
		if dt := st.Time.Sub(first[i].Time); dt > 0 && st.CPUUsageNanos >= first[i].CPUUsageNanos {
			milli = int64(float64(st.CPUUsageNanos-first[i].CPUUsageNanos) / float64(dt.Nanoseconds()) * 1000)
		}
		if o.allNamespaces {
			fmt.Fprintf(tw, "%s\t", t.ns)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.name,
			usage(strconv.FormatInt(milli, 10)+"m", float64(milli), strconv.FormatInt(st.CPULimitMilli, 10)+"m", float64(st.CPULimitMilli)),
			usage(humanSize(int64(st.MemoryBytes)), float64(st.MemoryBytes), humanSize(int64(st.MemoryLimitBytes)), float64(st.MemoryLimitBytes)),
			usage(strconv.FormatUint(st.PIDs, 10), float64(st.PIDs), strconv.FormatUint(st.PIDsLimit, 10), float64(st.PIDsLimit)))
	}
	tw.Flush()
	return code
}

// usage prints "USED/LIMIT (P%)", or "USED/-" without a limit.
func usage(used string, u float64, limit string, l float64) string {
	if l <= 0 {
		return used + "/-"
	}
	return fmt.Sprintf("%s/%s (%d%%)", used, limit, int(u*100/l+0.5))
}
