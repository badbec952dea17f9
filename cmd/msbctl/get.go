package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type getOptions struct {
	globalOptions
	output   string
	selector string
	watch    bool
}

func (o *getOptions) flags() *flagSet {
	fs := newFlagSet("get")
	o.register(fs)
	fs.stringVar(&o.output, "output", "o", "table", "output format: table, wide, yaml, json or name")
	fs.stringVar(&o.selector, "selector", "l", "", "label selector, e.g. app=agent,tier!=db")
	fs.boolVar(&o.watch, "watch", "w", false, "after listing, watch for changes and print each")
	return fs
}

func newGetCommand(e *env) *cobra.Command {
	o := &getOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "get KIND[,KIND...]|all [NAME...] | KIND/NAME... [-o table|wide|yaml|json|name] [-l SELECTOR] [-n NS | -A] [-w]"
	cmd.Short = "List objects or show some by name"
	cmd.Long = `List the objects of one resource type, or show some by name.

Tables show the most useful columns; -o wide adds more, and -o yaml or json
prints the objects whole (Secret values are never shown). With -w, get keeps
printing every change after the list until interrupted.

Several types at once (sb,netpol,secret) or "all" (sandboxes, network
policies and secrets) print a table per type, names written KIND/NAME.`
	cmd.Example = `  # List the sandboxes of the default namespace
  msbctl get sandboxes

  # Show one sandbox as YAML
  msbctl get sb web -o yaml

  # Show objects of different kinds by KIND/NAME
  msbctl get sb/web netpol/pypi

  # List several kinds at once, or all of sandboxes, policies and secrets
  msbctl get sb,netpol,secret
  msbctl get all -A

  # List the sandboxes labelled app=agent in every namespace, with more columns
  msbctl get sb -l app=agent -A -o wide

  # Watch sandboxes change
  msbctl get sb -w`
	cmd.ValidArgsFunction = completeRefs(&o.globalOptions, allKinds)
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outTable, outWide, outYAML, outJSON, outName))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runGet(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

// allKinds are the resource types get and describe take.
var allKinds = []string{v1alpha1.KindSandbox, v1alpha1.KindNetworkPolicy, v1alpha1.KindSecret, v1alpha1.KindEvent}

// writableKinds are those delete and wait take: Events come and go by themselves.
var writableKinds = []string{v1alpha1.KindSandbox, v1alpha1.KindNetworkPolicy, v1alpha1.KindSecret}

func runGet(ctx context.Context, c *client.Client, o *getOptions, args []string, stdout, stderr io.Writer) int {
	if err := checkOutput(o.output); err != nil {
		return fail(stderr, err)
	}
	if len(args) > 0 {
		if kinds, ok, err := kindList(args[0]); err != nil {
			return fail(stderr, err)
		} else if ok {
			return runGetKinds(ctx, c, o, kinds, args[1:], stdout, stderr)
		}
	}
	kind, refs, err := parseRefs(args)
	if err != nil {
		return fail(stderr, err)
	}
	ns := o.listNamespace()

	var objs []v1alpha1.Object
	var rv string
	code := exitOK
	if len(refs) == 0 {
		objs, rv, err = c.List(ctx, kind.Kind, ns, o.selector)
		if err != nil {
			return fail(stderr, err)
		}
		sortObjects(objs)
	} else {
		if o.allNamespaces {
			return usageFail(stderr, "get", "-A cannot be used with names: a name is looked up in one namespace (-n)")
		}
		for _, r := range refs {
			obj, err := c.Get(ctx, r.kind.Kind, o.namespace, r.name)
			if client.IsNotFound(err) {
				fmt.Fprintf(stderr, "Error: %v\n", notFound(r.kind, o.namespace, r.name))
				code = exitFail
				continue
			}
			if err != nil {
				return fail(stderr, err)
			}
			objs = append(objs, obj)
		}
	}

	if len(objs) == 0 && code == exitOK && !(o.watch && o.output != outTable && o.output != outWide) {
		if ns == "" {
			fmt.Fprintln(stderr, "No resources found.")
		} else {
			fmt.Fprintf(stderr, "No resources found in %s namespace.\n", ns)
		}
	}
	var tp *tablePrinter
	if len(objs) > 0 {
		if o.output == outTable || o.output == outWide {
			if kind != nil {
				tp = newTablePrinter(stdout, kind.Kind, o.output == outWide, o.allNamespaces)
				tp.print(objs)
			} else {
				printObjects(stdout, o.output, objs, false, o.allNamespaces)
			}
		} else if err := printObjects(stdout, o.output, objs, len(refs) == 1, o.allNamespaces); err != nil {
			return fail(stderr, err)
		}
	}
	if !o.watch {
		return code
	}
	if kind == nil {
		if len(refs) > 1 {
			for _, r := range refs[1:] {
				if r.kind.Kind != refs[0].kind.Kind {
					return usageFail(stderr, "get", "--watch takes one resource type")
				}
			}
		}
		kind = &refs[0].kind
	}
	if tp == nil {
		tp = newTablePrinter(stdout, kind.Kind, o.output == outWide, o.allNamespaces)
	}
	names := map[string]bool{}
	for _, r := range refs {
		names[r.name] = true
	}
	match := func(obj v1alpha1.Object) bool {
		m := obj.GetMetadata()
		if len(names) > 0 && !names[m.Name] {
			return false
		}
		if o.selector != "" {
			ok, err := v1alpha1.MatchLabels(o.selector, m.Labels)
			return err == nil && ok
		}
		return true
	}
	if rv == "" {
		// Named objects were read with Get: take the revision from a list.
		_, rv, err = c.List(ctx, kind.Kind, ns, o.selector)
		if err != nil {
			return fail(stderr, err)
		}
	}
	err = watchLoop(ctx, c, kind.Kind, ns, rv, func(ev client.WatchEvent) error {
		if ev.Object == nil || !match(ev.Object) {
			return nil
		}
		switch o.output {
		case outYAML:
			fmt.Fprintln(stdout, "---")
			return printYAMLDoc(stdout, ev.Object)
		case outJSON:
			return printJSONDoc(stdout, ev.Object)
		case outName:
			fmt.Fprintln(stdout, refName(ev.Object))
		default:
			tp.print([]v1alpha1.Object{ev.Object})
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return fail(stderr, err)
	}
	return code
}

// watchLoop follows changes of kind from revision rv until ctx ends, and
// calls fn for each. A broken stream is resumed from the last revision seen.
func watchLoop(ctx context.Context, c *client.Client, kind, ns, rv string, fn func(client.WatchEvent) error) error {
	for ctx.Err() == nil {
		ch, err := c.Watch(ctx, kind, ns, rv)
		if err != nil {
			return err
		}
		for ev := range ch {
			if ev.Type == "ERROR" {
				// Expired revision or a server problem: relist from now.
				rv = ""
				continue
			}
			if ev.Object != nil {
				if r := ev.Object.GetMetadata().ResourceVersion; r != "" {
					rv = r
				}
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return ctx.Err()
}

// sortObjects orders a list by namespace, then name (events by last seen).
func sortObjects(objs []v1alpha1.Object) {
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		ea, okA := a.(*v1alpha1.Event)
		eb, okB := b.(*v1alpha1.Event)
		if okA && okB && !ea.LastSeen.Equal(eb.LastSeen) {
			return ea.LastSeen.Before(eb.LastSeen)
		}
		ma, mb := a.GetMetadata(), b.GetMetadata()
		if ma.Namespace != mb.Namespace {
			return ma.Namespace < mb.Namespace
		}
		return ma.Name < mb.Name
	})
}

// ---- events ----

type eventsOptions struct {
	globalOptions
	forObj string
	watch  bool
	output string
}

func (o *eventsOptions) flags() *flagSet {
	fs := newFlagSet("events")
	o.register(fs)
	fs.stringVar(&o.forObj, "for", "", "", "only events about this object, KIND/NAME")
	fs.boolVar(&o.watch, "watch", "w", false, "after listing, watch for new events")
	fs.stringVar(&o.output, "output", "o", "table", "output format: table, yaml, json or name")
	return fs
}

func newEventsCommand(e *env) *cobra.Command {
	o := &eventsOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "events [-n NS | -A] [--for KIND/NAME] [-w]"
	cmd.Short = "List events, oldest first"
	cmd.Long = `List the events msbd recorded (a sandbox started, an image failed to pull, a
volume is exposed...), oldest first. --for keeps those about one object; -w
keeps printing new ones until interrupted.`
	cmd.Example = `  # List the events of the default namespace
  msbctl events

  # Follow what happens to one sandbox
  msbctl events --for sandbox/web -w`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RegisterFlagCompletionFunc("for", func(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeKindName(c.Context(), &o.globalOptions, writableKinds, nil, toComplete)
	})
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outTable, outYAML, outJSON, outName))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runEvents(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runEvents(ctx context.Context, c *client.Client, o *eventsOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "events", "unexpected argument %q (use --for KIND/NAME to pick an object)", args[0])
	}
	if err := checkOutput(o.output); err != nil {
		return fail(stderr, err)
	}
	var kind, name string
	if o.forObj != "" {
		r, err := parseKindName(o.forObj)
		if err != nil {
			return fail(stderr, err)
		}
		kind, name = r.kind.Kind, r.name
	}
	ns := o.listNamespace()
	var rv string
	if o.watch {
		// The revision to watch from comes with a list.
		var err error
		if _, rv, err = c.List(ctx, v1alpha1.KindEvent, ns, ""); err != nil {
			return fail(stderr, err)
		}
	}
	evs, err := c.Events(ctx, ns, kind, name)
	if err != nil {
		return fail(stderr, err)
	}
	objs := make([]v1alpha1.Object, len(evs))
	for i := range evs {
		if evs[i].Kind == "" {
			evs[i].Kind = v1alpha1.KindEvent
			evs[i].APIVersion = v1alpha1.APIVersion
		}
		objs[i] = &evs[i]
	}
	tp := newTablePrinter(stdout, v1alpha1.KindEvent, false, o.allNamespaces)
	if len(objs) == 0 {
		if ns == "" {
			fmt.Fprintln(stderr, "No events found.")
		} else {
			fmt.Fprintf(stderr, "No events found in %s namespace.\n", ns)
		}
	} else if o.output == outTable || o.output == outWide {
		tp.print(objs)
	} else if err := printObjects(stdout, o.output, objs, false, o.allNamespaces); err != nil {
		return fail(stderr, err)
	}
	if !o.watch {
		return exitOK
	}
	err = watchLoop(ctx, c, v1alpha1.KindEvent, ns, rv, func(we client.WatchEvent) error {
		ev, ok := we.Object.(*v1alpha1.Event)
		if !ok || we.Type == "DELETED" {
			return nil
		}
		if kind != "" && (!strings.EqualFold(ev.InvolvedObject.Kind, kind) || ev.InvolvedObject.Name != name) {
			return nil
		}
		switch o.output {
		case outYAML:
			fmt.Fprintln(stdout, "---")
			return printYAMLDoc(stdout, ev)
		case outJSON:
			return printJSONDoc(stdout, ev)
		case outName:
			fmt.Fprintln(stdout, refName(ev))
		default:
			tp.print([]v1alpha1.Object{ev})
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return fail(stderr, err)
	}
	return exitOK
}
