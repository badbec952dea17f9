package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type deleteOptions struct {
	globalOptions
	files          []string
	recursive      bool
	wait           bool
	timeout        time.Duration
	ignoreNotFound bool
	selector       string
	all            bool
}

func (o *deleteOptions) flags() *flagSet {
	fs := newFlagSet("delete")
	o.register(fs)
	fs.sliceVar(&o.files, "filename", "f", "delete the objects of this manifest file, directory or - (repeatable)")
	fs.boolVar(&o.recursive, "recursive", "R", false, "read directories given with -f recursively")
	fs.boolVar(&o.wait, "wait", "", true, "wait until the objects are gone (a Sandbox goes once its cleanup ran)")
	fs.durationVar(&o.timeout, "timeout", "", 60*time.Second, "how long --wait waits")
	fs.boolVar(&o.ignoreNotFound, "ignore-not-found", "", false, "treat a missing object as deleted")
	fs.stringVar(&o.selector, "selector", "l", "", "delete every object of KIND matching this label selector")
	fs.boolVar(&o.all, "all", "", false, "delete every object of KIND in the namespace")
	return fs
}

func newDeleteCommand(e *env) *cobra.Command {
	o := &deleteOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "delete KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all | -f FILE|DIR [-R] [--wait=true] [--timeout=60s] [--ignore-not-found]"
	cmd.Short = "Delete objects by name or by manifest"
	cmd.Long = `Delete objects by name, by label selector, all of a kind, or those a manifest
describes (in reverse order, sandboxes before what they use).

By default delete waits until the objects are gone: a Sandbox goes once msbd
stopped it and removed what it held. --wait=false returns at once.`
	cmd.Example = `  # Delete one sandbox and wait until it is gone
  msbctl delete sandbox web

  # Delete objects of different kinds
  msbctl delete sb/web netpol/pypi

  # Delete what a directory of manifests describes
  msbctl delete -f manifests/ -R

  # Delete every sandbox of the namespace
  msbctl delete sandboxes --all

  # Ask for the deletion and return at once
  msbctl delete sb web --wait=false`
	cmd.ValidArgsFunction = completeRefs(&o.globalOptions, writableKinds)
	manifestFlag(fs)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runDelete(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runDelete(ctx context.Context, c *client.Client, o *deleteOptions, args []string, stdout, stderr io.Writer) int {
	if o.allNamespaces {
		return usageFail(stderr, "delete", "-A is not supported; name the namespace with -n")
	}
	type target struct {
		kind      v1alpha1.KindInfo
		namespace string
		name      string
	}
	var targets []target
	switch {
	case len(o.files) > 0:
		if len(args) > 0 {
			return usageFail(stderr, "delete", "give either -f or names, not both")
		}
		objs, ok := loadManifests(o.files, o.recursive, o.globalOptions, o.changed("namespace"), "delete", stderr)
		if !ok {
			return exitFail
		}
		// Delete in reverse apply order: sandboxes before what they use.
		for i := len(objs) - 1; i >= 0; i-- {
			ki, err := v1alpha1.KindOf(objs[i])
			if err != nil {
				return fail(stderr, err)
			}
			m := objs[i].GetMetadata()
			targets = append(targets, target{ki, m.Namespace, m.Name})
		}
	default:
		kind, refs, err := parseRefs(args)
		if err != nil {
			return fail(stderr, err)
		}
		if o.all && (len(refs) > 0 || o.selector != "") {
			return usageFail(stderr, "delete", "--all deletes every object of KIND; give no names or selector with it")
		}
		if len(refs) == 0 {
			if o.selector == "" && !o.all {
				return usageFail(stderr, "delete", "name the objects to delete (KIND NAME, KIND/NAME, KIND --all, -l SELECTOR or -f FILE)")
			}
			objs, _, err := c.List(ctx, kind.Kind, o.namespace, o.selector)
			if err != nil {
				return fail(stderr, err)
			}
			sortObjects(objs)
			if len(objs) == 0 {
				fmt.Fprintf(stderr, "No resources found in %s namespace.\n", o.namespace)
				return exitOK
			}
			for _, obj := range objs {
				targets = append(targets, target{*kind, o.namespace, obj.GetMetadata().Name})
			}
		} else {
			for _, r := range refs {
				targets = append(targets, target{r.kind, o.namespace, r.name})
			}
		}
	}

	code := exitOK
	var deleted []target
	for _, t := range targets {
		err := c.Delete(ctx, t.kind.Kind, t.namespace, t.name)
		if client.IsNotFound(err) {
			if !o.ignoreNotFound {
				fmt.Fprintf(stderr, "Error: %v\n", notFound(t.kind, t.namespace, t.name))
				code = exitFail
			}
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error: %s %q: %v\n", t.kind.Singular, t.name, err)
			code = exitFail
			continue
		}
		fmt.Fprintf(stdout, "%s %q deleted\n", t.kind.Singular, t.name)
		deleted = append(deleted, t)
	}
	if !o.wait || len(deleted) == 0 {
		return code
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// One list and watch per kind and namespace for all of them: a wait
	// per object (a list each) made deleting N objects cost N lists of N.
	type group struct{ kind, ns string }
	pending := map[group]map[string]bool{}
	var order []group
	for _, t := range deleted {
		g := group{t.kind.Kind, t.namespace}
		if pending[g] == nil {
			pending[g] = map[string]bool{}
			order = append(order, g)
		}
		pending[g][t.name] = true
	}
	for _, g := range order {
		err := waitGone(wctx, c, g.kind, g.ns, pending[g])
		if errors.Is(err, errTimeout) {
			for _, t := range deleted {
				if t.kind.Kind == g.kind && t.namespace == g.ns && pending[g][t.name] {
					timeoutError(stderr, t.kind, t.name)
					return exitFail
				}
			}
		}
		if err != nil {
			return fail(stderr, err)
		}
	}
	return code
}

// waitGone waits until none of names (of kind in ns) exists, removing each
// from names as it goes: it lists once, then follows one watch from the
// list's revision, listing again only when the stream ends.
func waitGone(ctx context.Context, c *client.Client, kind, ns string, names map[string]bool) error {
	return listWatch(ctx, c, kind, ns, func(objs []v1alpha1.Object) bool {
		present := make(map[string]bool, len(objs))
		for _, o := range objs {
			present[o.GetMetadata().Name] = true
		}
		for n := range names {
			if !present[n] {
				delete(names, n)
			}
		}
		return len(names) == 0
	}, func(ev client.WatchEvent) bool {
		if ev.Type == "DELETED" {
			delete(names, ev.Object.GetMetadata().Name)
		}
		return len(names) == 0
	})
}
