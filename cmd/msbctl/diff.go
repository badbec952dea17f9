package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type diffOptions struct {
	globalOptions
	files     []string
	recursive bool
	prune     bool
	applySet  string
}

func (o *diffOptions) flags() *flagSet {
	fs := newFlagSet("diff")
	o.register(fs)
	fs.sliceVar(&o.files, "filename", "f", "manifest file, directory or - for stdin (repeatable)")
	fs.boolVar(&o.recursive, "recursive", "R", false, "read directories given with -f recursively")
	fs.boolVar(&o.prune, "prune", "", false, "also show the objects apply --prune would delete")
	fs.stringVar(&o.applySet, "applyset", "", "", "name of the apply set, as for apply --prune")
	return fs
}

func newDiffCommand(e *env) *cobra.Command {
	o := &diffOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "diff -f FILE|DIR|- [-R] [--prune [--applyset NAME]]"
	cmd.Short = "Show what apply would change"
	cmd.Long = `Show what apply would change: the live objects against the manifests
(labels, annotations, spec) as a unified diff, live first. msbd computes the
result as a server dry run, so defaults and validation are msbd's own.

Secret values are never shown: a Secret whose values changed shows
"values: (may differ; not shown)".

With --prune the diff is that of "apply --prune": the objects of the apply set
that the manifests no longer hold show as deleted.`
	cmd.Example = `  # Compare a manifest with what runs
  msbctl diff -f sandbox.yaml

  # Compare a directory of manifests, and apply only if something changed
  msbctl diff -f manifests/ -R || msbctl apply -f manifests/ -R`
	cmd.Annotations = map[string]string{exitCodesAnnotation: "Exit codes: 0 no differences, 1 differences found, 2 an error."}
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	manifestFlag(fs)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runDiff(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

const diffError = 2

func runDiff(ctx context.Context, c *client.Client, o *diffOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "diff", "unexpected argument %q (manifests are given with -f)", args[0])
	}
	if len(o.files) == 0 {
		return usageFail(stderr, "diff", "no manifests given: use -f FILE, -f DIR or -f -")
	}
	objs, ok := loadManifests(o.files, o.recursive, o.globalOptions, o.changed("namespace"), "diff", stderr)
	if !ok {
		return diffError
	}
	set := ""
	if o.prune || o.applySet != "" {
		var err error
		if set, err = applySetName(o.applySet, o.files); err != nil {
			fail(stderr, err)
			return diffError
		}
		if err := labelApplySet(objs, set); err != nil {
			fail(stderr, err)
			return diffError
		}
	}
	// Desired copies are made before Apply sees the objects.
	desired := make([]v1alpha1.Object, len(objs))
	for i, obj := range objs {
		d, err := cloneObject(obj)
		if err != nil {
			fail(stderr, err)
			return diffError
		}
		desired[i] = d
	}
	results, err := c.Apply(ctx, objs, true)
	if err != nil {
		fail(stderr, err)
		return diffError
	}
	action := map[string]string{}
	for _, r := range results {
		action[v1alpha1.Key(r.Kind, r.Namespace, r.Name)] = r.Action
	}
	differs := false
	for _, want := range desired {
		m := want.GetMetadata()
		kind := want.GetTypeMeta().Kind
		act := action[v1alpha1.Key(kind, m.Namespace, m.Name)]
		if act == "unchanged" {
			continue
		}
		var live v1alpha1.Object
		if act != "created" {
			live, err = c.Get(ctx, kind, m.Namespace, m.Name)
			if err != nil && !client.IsNotFound(err) {
				fail(stderr, err)
				return diffError
			}
		}
		d, err := diffObject(stdout, live, want)
		if err != nil {
			fail(stderr, err)
			return diffError
		}
		if d || act == "configured" || act == "created" {
			differs = true
		}
	}
	if o.prune {
		cands, err := pruneCandidates(ctx, c, set, desired)
		if err != nil {
			fail(stderr, err)
			return diffError
		}
		for _, live := range cands {
			if err := diffPruned(stdout, live); err != nil {
				fail(stderr, err)
				return diffError
			}
			differs = true
		}
	}
	if differs {
		return exitFail
	}
	return exitOK
}

// cloneObject deep-copies obj and makes sure its kind is set.
func cloneObject(obj v1alpha1.Object) (v1alpha1.Object, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	c := v1alpha1.Clone(obj)
	tm := c.GetTypeMeta()
	tm.Kind = ki.Kind
	if tm.APIVersion == "" {
		tm.APIVersion = v1alpha1.APIVersion
	}
	return c, nil
}

// comparable returns the part of obj apply manages, as YAML: kind, name,
// namespace, labels, annotations and spec. Secret values are left out; their
// keys are listed instead.
func comparableYAML(obj v1alpha1.Object, defaults bool) (string, error) {
	c, err := cloneObject(obj)
	if err != nil {
		return "", err
	}
	if defaults {
		v1alpha1.SetDefaults(c)
	}
	m := c.GetMetadata()
	*m = v1alpha1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations}
	var keys []string
	switch o := c.(type) {
	case *v1alpha1.Sandbox:
		o.Status = v1alpha1.SandboxStatus{}
	case *v1alpha1.NetworkPolicy:
		o.Status = v1alpha1.NetworkPolicyStatus{}
	case *v1alpha1.Secret:
		keys = secretKeys(o)
		o.Status = v1alpha1.SecretStatus{}
		o.Spec.StringData, o.Spec.Data = nil, nil
	}
	b, err := v1alpha1.ToYAML(c)
	if err != nil {
		return "", err
	}
	s := string(b)
	// Empty status blocks are noise in a diff.
	s = strings.Replace(s, "\nstatus: {}\n", "\n", 1)
	if _, ok := c.(*v1alpha1.Secret); ok {
		s = strings.TrimRight(s, "\n") + "\nkeys: [" + strings.Join(keys, ", ") + "]\n"
	}
	return s, nil
}

// diffObject writes the diff of live (nil: absent) against want and reports
// whether they differ.
func diffObject(w io.Writer, live, want v1alpha1.Object) (bool, error) {
	wantYAML, err := comparableYAML(want, true)
	if err != nil {
		return false, err
	}
	liveYAML := ""
	if live != nil {
		if liveYAML, err = comparableYAML(live, false); err != nil {
			return false, err
		}
	}
	name := refName(want)
	if want.GetTypeMeta().Kind == "" {
		ki, _ := v1alpha1.KindOf(want)
		name = ki.Singular + "/" + want.GetMetadata().Name
	}
	fmt.Fprintf(w, "diff %s\n", name)
	from := "live/" + name
	if live == nil {
		from = "/dev/null"
	}
	changed := writeUnified(w, from, "desired/"+name, lineDiff(splitLines(liveYAML), splitLines(wantYAML)), 3)
	if _, isSecret := want.(*v1alpha1.Secret); isSecret && live != nil {
		// The server said configured but the visible parts match: the values differ.
		if !changed {
			fmt.Fprintf(w, "--- live/%s\n+++ desired/%s\n", name, name)
		}
		fmt.Fprintln(w, " values: (may differ; not shown)")
		return true, nil
	}
	return changed, nil
}
