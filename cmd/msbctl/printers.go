package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"msb.dev/msb/apis/v1alpha1"
)

// now is the clock ages are measured against; tests pin it.
var now = time.Now

// Output formats of -o.
const (
	outTable = "table"
	outWide  = "wide"
	outYAML  = "yaml"
	outJSON  = "json"
	outName  = "name"
)

func checkOutput(format string) error {
	switch format {
	case "", outTable, outWide, outYAML, outJSON, outName:
		return nil
	}
	return usagef("unknown output format %q: want one of table, wide, yaml, json, name", format)
}

// formatAge renders a duration the way kubectl's AGE column does:
// 45s, 2m30s, 12m, 5h10m, 20h, 3d4h, 30d, 2y. It is the rule of
// HumanDuration in k8s.io/apimachinery/pkg/util/duration, written out here
// rather than imported: that package is two dozen lines, and the module
// around it is megabytes whose requirements would join every msb binary's
// version selection. Small duration modules (go-humanize and the like)
// print "3 days ago", not kubectl's columns.
func formatAge(d time.Duration) string {
	seconds := int(d.Seconds())
	switch {
	case seconds < -1:
		return "<invalid>"
	case seconds < 0:
		return "0s"
	case seconds < 60*2:
		return fmt.Sprintf("%ds", seconds)
	}
	minutes := int(d / time.Minute)
	if minutes < 10 {
		if s := seconds % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", minutes, s)
		}
		return fmt.Sprintf("%dm", minutes)
	}
	if minutes < 60*3 {
		return fmt.Sprintf("%dm", minutes)
	}
	hours := int(d / time.Hour)
	switch {
	case hours < 8:
		if m := minutes % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", hours, m)
		}
		return fmt.Sprintf("%dh", hours)
	case hours < 48:
		return fmt.Sprintf("%dh", hours)
	case hours < 24*8:
		if h := hours % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", hours/24, h)
		}
		return fmt.Sprintf("%dd", hours/24)
	case hours < 24*365*2:
		return fmt.Sprintf("%dd", hours/24)
	case hours < 24*365*8:
		if dy := (hours / 24) % 365; dy != 0 {
			return fmt.Sprintf("%dy%dd", hours/24/365, dy)
		}
		return fmt.Sprintf("%dy", hours/24/365)
	}
	return fmt.Sprintf("%dy", hours/24/365)
}

// ageOf is the age of t, or <unknown> when the server did not set it.
func ageOf(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "<unknown>"
	}
	return formatAge(now().Sub(*t))
}

// refName is KIND/NAME as kubectl prints it: "sandbox/x".
func refName(obj v1alpha1.Object) string {
	return strings.ToLower(obj.GetTypeMeta().Kind) + "/" + obj.GetMetadata().Name
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// labelString renders a label map as "a=b,c=d", sorted.
func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// shortDigest is the first 12 hex digits of a digest.
func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// secretKeys are the keys a Secret holds: from status when the server
// reported them, else from the spec (the values themselves are never used).
func secretKeys(s *v1alpha1.Secret) []string {
	if len(s.Status.Keys) > 0 {
		return append([]string(nil), s.Status.Keys...)
	}
	set := map[string]bool{}
	for k := range s.Spec.StringData {
		set[k] = true
	}
	for k := range s.Spec.Data {
		set[k] = true
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// column is one column of a table.
type column struct {
	header string
	wide   bool // only with -o wide
	value  func(v1alpha1.Object) string
}

func readyOf(conds []v1alpha1.Condition) string {
	if c := v1alpha1.FindCondition(conds, v1alpha1.ConditionReady); c != nil {
		return string(c.Status)
	}
	return "Unknown"
}

func columnsFor(kind string) []column {
	name := column{header: "NAME", value: func(o v1alpha1.Object) string { return o.GetMetadata().Name }}
	age := column{header: "AGE", value: func(o v1alpha1.Object) string { return ageOf(o.GetMetadata().CreationTimestamp) }}
	switch kind {
	case v1alpha1.KindSandbox:
		sb := func(o v1alpha1.Object) *v1alpha1.Sandbox { return o.(*v1alpha1.Sandbox) }
		return []column{
			name,
			{header: "PHASE", value: func(o v1alpha1.Object) string { return orNone(string(sb(o).Status.Phase)) }},
			{header: "READY", value: func(o v1alpha1.Object) string { return readyOf(sb(o).Status.Conditions) }},
			{header: "ISOLATION", value: func(o v1alpha1.Object) string {
				s := sb(o)
				if s.Status.Isolation != "" {
					return string(s.Status.Isolation)
				}
				return orNone(string(s.Spec.Isolation))
			}},
			{header: "RESTARTS", value: func(o v1alpha1.Object) string { return strconv.Itoa(int(sb(o).Status.RestartCount)) }},
			age,
			{header: "IMAGE", wide: true, value: func(o v1alpha1.Object) string { return orNone(sb(o).Spec.Image) }},
			{header: "IP", wide: true, value: func(o v1alpha1.Object) string { return orNone(sb(o).Status.IP) }},
			{header: "DIGEST", wide: true, value: func(o v1alpha1.Object) string { return orNone(shortDigest(sb(o).Status.ImageDigest)) }},
			{header: "EXIT", wide: true, value: func(o v1alpha1.Object) string {
				if c := sb(o).Status.ExitCode; c != nil {
					return strconv.Itoa(int(*c))
				}
				return "<none>"
			}},
		}
	case v1alpha1.KindNetworkPolicy:
		np := func(o v1alpha1.Object) *v1alpha1.NetworkPolicy { return o.(*v1alpha1.NetworkPolicy) }
		return []column{
			name,
			{header: "SELECTOR", value: func(o v1alpha1.Object) string {
				return allIfEmpty(labelString(np(o).Spec.SandboxSelector.MatchLabels))
			}},
			{header: "RULES", value: func(o v1alpha1.Object) string { return strconv.Itoa(len(np(o).Spec.Egress)) }},
			{header: "SANDBOXES", value: func(o v1alpha1.Object) string { return strconv.Itoa(int(np(o).Status.SelectedSandboxes)) }},
			age,
		}
	case v1alpha1.KindSecret:
		sec := func(o v1alpha1.Object) *v1alpha1.Secret { return o.(*v1alpha1.Secret) }
		return []column{
			name,
			{header: "KEYS", value: func(o v1alpha1.Object) string { return strconv.Itoa(len(secretKeys(sec(o)))) }},
			{header: "ALLOWED-HOSTS", value: func(o v1alpha1.Object) string {
				return orNone(strings.Join(sec(o).Spec.AllowedHosts, ","))
			}},
			age,
		}
	case v1alpha1.KindEvent:
		ev := func(o v1alpha1.Object) *v1alpha1.Event { return o.(*v1alpha1.Event) }
		return []column{
			{header: "LAST SEEN", value: func(o v1alpha1.Object) string {
				t := ev(o).LastSeen
				return ageOf(&t)
			}},
			{header: "TYPE", value: func(o v1alpha1.Object) string { return ev(o).Type }},
			{header: "REASON", value: func(o v1alpha1.Object) string { return ev(o).Reason }},
			{header: "OBJECT", value: func(o v1alpha1.Object) string {
				r := ev(o).InvolvedObject
				return strings.ToLower(r.Kind) + "/" + r.Name
			}},
			{header: "MESSAGE", value: func(o v1alpha1.Object) string { return oneLine(ev(o).Message) }},
		}
	}
	return []column{name, age}
}

// allIfEmpty shows an empty selector as what it selects: everything.
func allIfEmpty(s string) string {
	if s == "" {
		return "<all>"
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

// tablePrinter prints objects of one kind as rows; the header comes once.
// Column widths only grow, so rows printed later (a watch) stay aligned
// with the header.
type tablePrinter struct {
	w          io.Writer
	cols       []column
	namespaces bool
	headerDone bool
	widths     []int
}

func newTablePrinter(w io.Writer, kind string, wide, namespaces bool) *tablePrinter {
	var cols []column
	for _, c := range columnsFor(kind) {
		if !c.wide || wide {
			cols = append(cols, c)
		}
	}
	return &tablePrinter{w: w, cols: cols, namespaces: namespaces}
}

// columnGap is the space between columns, as in kubectl.
const columnGap = 3

// print writes rows for objs (and the header first, once).
func (p *tablePrinter) print(objs []v1alpha1.Object) {
	var rows [][]string
	if !p.headerDone {
		var h []string
		if p.namespaces {
			h = append(h, "NAMESPACE")
		}
		for _, c := range p.cols {
			h = append(h, c.header)
		}
		rows = append(rows, h)
		p.headerDone = true
	}
	for _, o := range objs {
		var row []string
		if p.namespaces {
			row = append(row, o.GetMetadata().Namespace)
		}
		for _, c := range p.cols {
			row = append(row, c.value(o))
		}
		rows = append(rows, row)
	}
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(p.widths) {
				p.widths = append(p.widths, 0)
			}
			p.widths[i] = max(p.widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			b.WriteString(cell)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", p.widths[i]-utf8.RuneCountInString(cell)+columnGap))
			}
		}
		b.WriteString("\n")
	}
	io.WriteString(p.w, b.String())
}

// redacted returns obj with secret values replaced, for output.
func redacted(obj v1alpha1.Object) v1alpha1.Object {
	return v1alpha1.Redact(obj)
}

// printYAMLDoc writes one object as a YAML document.
func printYAMLDoc(w io.Writer, obj v1alpha1.Object) error {
	b, err := v1alpha1.ToYAML(redacted(obj))
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func printJSONDoc(w io.Writer, obj v1alpha1.Object) error {
	b, err := v1alpha1.ToJSON(redacted(obj))
	if err != nil {
		return err
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

// printObjects writes objs in format. With single, one object is printed as
// itself; otherwise a "kind: List" holds them (yaml and json).
func printObjects(w io.Writer, format string, objs []v1alpha1.Object, single bool, namespaces bool) error {
	switch format {
	case outName:
		for _, o := range objs {
			fmt.Fprintln(w, refName(o))
		}
		return nil
	case outYAML:
		if single && len(objs) == 1 {
			return printYAMLDoc(w, objs[0])
		}
		return printYAMLList(w, objs)
	case outJSON:
		if single && len(objs) == 1 {
			return printJSONDoc(w, objs[0])
		}
		return printJSONList(w, objs)
	}
	// Tables: one per kind, in the order kinds first appear.
	var kinds []string
	byKind := map[string][]v1alpha1.Object{}
	for _, o := range objs {
		k := o.GetTypeMeta().Kind
		if _, seen := byKind[k]; !seen {
			kinds = append(kinds, k)
		}
		byKind[k] = append(byKind[k], o)
	}
	for i, k := range kinds {
		if i > 0 {
			fmt.Fprintln(w)
		}
		newTablePrinter(w, k, format == outWide, namespaces).print(byKind[k])
	}
	return nil
}

func printYAMLList(w io.Writer, objs []v1alpha1.Object) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "apiVersion: %s\nkind: List\n", v1alpha1.APIVersion)
	if len(objs) == 0 {
		sb.WriteString("items: []\n")
	} else {
		sb.WriteString("items:\n")
	}
	for _, o := range objs {
		b, err := v1alpha1.ToYAML(redacted(o))
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for i, l := range lines {
			switch {
			case i == 0:
				sb.WriteString("- " + l + "\n")
			case l == "":
				sb.WriteString("\n")
			default:
				sb.WriteString("  " + l + "\n")
			}
		}
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// printJSONList writes a "kind: List" in the layout of ToJSON (which, unlike
// encoding/json, leaves "<" and ">" unescaped).
func printJSONList(w io.Writer, objs []v1alpha1.Object) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "{\n    \"apiVersion\": %q,\n    \"kind\": \"List\",\n", v1alpha1.APIVersion)
	if len(objs) == 0 {
		sb.WriteString("    \"items\": []\n}\n")
		_, err := io.WriteString(w, sb.String())
		return err
	}
	sb.WriteString("    \"items\": [\n")
	for i, o := range objs {
		b, err := v1alpha1.ToJSON(redacted(o))
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for j, l := range lines {
			sb.WriteString("        " + l)
			if j == len(lines)-1 && i < len(objs)-1 {
				sb.WriteString(",")
			}
			sb.WriteString("\n")
		}
	}
	sb.WriteString("    ]\n}\n")
	_, err := io.WriteString(w, sb.String())
	return err
}
