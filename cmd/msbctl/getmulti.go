package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// kindList reads get's first argument when it names several resource types:
// "all" (sandboxes, network policies and secrets, as kubectl's all leaves
// events out) or a comma-separated list such as sb,netpol,secret. ok is false
// for one type or KIND/NAME, which runGet handles itself.
func kindList(arg string) (kinds []v1alpha1.KindInfo, ok bool, err error) {
	if strings.Contains(arg, "/") {
		return nil, false, nil
	}
	names := strings.Split(arg, ",")
	if strings.EqualFold(arg, "all") {
		names = writableKinds
	} else if len(names) == 1 {
		return nil, false, nil
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" {
			return nil, true, usagef("%q: an empty resource type in the list", arg)
		}
		ki, err := v1alpha1.LookupKind(n)
		if err != nil {
			return nil, true, err
		}
		if !seen[ki.Kind] {
			seen[ki.Kind] = true
			kinds = append(kinds, ki)
		}
	}
	return kinds, true, nil
}

// runGetKinds lists every object of several kinds: a table per kind with
// KIND/NAME names (as kubectl prints them), or one list in yaml, json, name.
func runGetKinds(ctx context.Context, c *client.Client, o *getOptions, kinds []v1alpha1.KindInfo, names []string, stdout, stderr io.Writer) int {
	if len(names) > 0 {
		return usageFail(stderr, "get", "names need one resource type: use KIND/NAME, e.g. msbctl get sb/web netpol/pypi")
	}
	if o.watch {
		return usageFail(stderr, "get", "--watch takes one resource type")
	}
	ns := o.listNamespace()
	var all []v1alpha1.Object
	printed := false
	for _, k := range kinds {
		objs, _, err := c.List(ctx, k.Kind, ns, o.selector)
		if err != nil {
			return fail(stderr, err)
		}
		sortObjects(objs)
		all = append(all, objs...)
		if len(objs) == 0 || (o.output != outTable && o.output != outWide) {
			continue
		}
		if printed {
			fmt.Fprintln(stdout)
		}
		printed = true
		var buf strings.Builder
		newTablePrinter(&buf, k.Kind, o.output == outWide, o.allNamespaces).print(objs)
		io.WriteString(stdout, prefixNames(buf.String(), k.Singular, o.allNamespaces))
	}
	if len(all) == 0 {
		if ns == "" {
			fmt.Fprintln(stderr, "No resources found.")
		} else {
			fmt.Fprintf(stderr, "No resources found in %s namespace.\n", ns)
		}
		return exitOK
	}
	if o.output != outTable && o.output != outWide {
		if err := printObjects(stdout, o.output, all, false, o.allNamespaces); err != nil {
			return fail(stderr, err)
		}
	}
	return exitOK
}

// prefixNames writes KIND/ before each name of a table (the NAME column,
// second after NAMESPACE with -A), widening that column to match.
func prefixNames(table, singular string, namespaces bool) string {
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) == 0 {
		return table
	}
	// The NAME column starts where its header does.
	start := strings.Index(lines[0], "NAME")
	if namespaces && strings.HasPrefix(lines[0], "NAMESPACE") {
		if i := strings.Index(lines[0][len("NAMESPACE"):], "NAME"); i >= 0 {
			start = i + len("NAMESPACE")
		}
	}
	if start < 0 {
		return table
	}
	prefix := singular + "/"
	var b strings.Builder
	for i, l := range lines {
		if start > len(l) {
			b.WriteString(l + "\n")
			continue
		}
		if i == 0 {
			b.WriteString(l[:start] + "NAME" + strings.Repeat(" ", len(prefix)) + l[start+4:] + "\n")
			continue
		}
		b.WriteString(l[:start] + prefix + l[start:] + "\n")
	}
	return b.String()
}
