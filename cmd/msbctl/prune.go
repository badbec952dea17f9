package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// An apply set is the objects one directory of manifests creates, as
// kubectl's ApplySet: apply --prune labels every object it applies with
// LabelApplySet=NAME, and deletes the objects carrying that label that the
// manifests no longer hold. Objects without the label (made by hand, by
// another set, by msbctl run) are never pruned.
const LabelApplySet = v1alpha1.LabelApplySet

var applySetNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$`)

// applySetName is --applyset's value, or the name of the one directory (or
// file, without its extension) given with -f.
func applySetName(flag string, files []string) (string, error) {
	name := flag
	if name == "" {
		if len(files) != 1 || files[0] == "-" {
			return "", usagef("--prune needs --applyset NAME when the manifests are not one directory or file")
		}
		base := filepath.Base(filepath.Clean(files[0]))
		name = strings.ToLower(strings.TrimSuffix(base, filepath.Ext(base)))
	}
	if !applySetNameRE.MatchString(name) {
		return "", usagef("apply set name %q: want at most 63 lowercase letters, digits, '-', '_' or '.' (give --applyset NAME)", name)
	}
	return name, nil
}

// labelApplySet marks objs as members of set, refusing an object whose
// manifest names another set.
func labelApplySet(objs []v1alpha1.Object, set string) error {
	for _, obj := range objs {
		m := obj.GetMetadata()
		if cur, ok := m.Labels[LabelApplySet]; ok && cur != set {
			return fmt.Errorf("%s: its manifest sets label %s=%s, but this apply is set %q", refName(obj), LabelApplySet, cur, set)
		}
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[LabelApplySet] = set
	}
	return nil
}

// pruneCandidates returns the live members of set, in every namespace, that
// are not among objs: what a prune deletes. Sandboxes come first, so what
// they use goes after them.
func pruneCandidates(ctx context.Context, c *client.Client, set string, objs []v1alpha1.Object) ([]v1alpha1.Object, error) {
	keep := map[string]bool{}
	for _, o := range objs {
		m := o.GetMetadata()
		keep[v1alpha1.Key(o.GetTypeMeta().Kind, m.Namespace, m.Name)] = true
	}
	var out []v1alpha1.Object
	for _, kind := range writableKinds {
		live, _, err := c.List(ctx, kind, "", LabelApplySet+"="+set)
		if err != nil {
			return nil, err
		}
		sortObjects(live)
		for _, o := range live {
			m := o.GetMetadata()
			if m.Labels[LabelApplySet] != set || keep[v1alpha1.Key(kind, m.Namespace, m.Name)] {
				continue
			}
			if m.DeletionTimestamp != nil {
				continue // already going
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// prune deletes the candidates (or, on a dry run, only says so).
func prune(ctx context.Context, c *client.Client, cands []v1alpha1.Object, dryRun string, stdout, stderr io.Writer) int {
	suffix := ""
	switch dryRun {
	case dryRunClient:
		suffix = " (dry run)"
	case dryRunServer:
		suffix = " (server dry run)"
	}
	code := exitOK
	for _, o := range cands {
		m := o.GetMetadata()
		kind := o.GetTypeMeta().Kind
		if dryRun == dryRunNone {
			if err := c.Delete(ctx, kind, m.Namespace, m.Name); err != nil && !client.IsNotFound(err) {
				fmt.Fprintf(stderr, "Error: pruning %s: %v\n", pruneName(o), err)
				code = exitFail
				continue
			}
		}
		fmt.Fprintf(stdout, "%s pruned%s\n", pruneName(o), suffix)
	}
	return code
}

// pruneName is KIND/NAME, with the namespace when it is not "default".
func pruneName(o v1alpha1.Object) string {
	m := o.GetMetadata()
	n := strings.ToLower(o.GetTypeMeta().Kind) + "/" + m.Name
	if m.Namespace != "" && m.Namespace != "default" {
		n += " (namespace " + m.Namespace + ")"
	}
	return n
}

// diffPruned prints what a prune would delete as a diff from the live object
// to nothing.
func diffPruned(w io.Writer, live v1alpha1.Object) error {
	y, err := comparableYAML(live, false)
	if err != nil {
		return err
	}
	name := refName(live)
	fmt.Fprintf(w, "diff %s (pruned)\n", name)
	writeUnified(w, "live/"+name, "/dev/null", lineDiff(splitLines(y), nil), 3)
	return nil
}
