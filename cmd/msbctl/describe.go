package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type describeOptions struct{ globalOptions }

func (o *describeOptions) flags() *flagSet {
	fs := newFlagSet("describe")
	o.register(fs)
	return fs
}

func newDescribeCommand(e *env) *cobra.Command {
	o := &describeOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "describe KIND NAME... | KIND/NAME... [-n NS]"
	cmd.Short = "Show an object in detail, with its conditions and events"
	cmd.Long = `Show objects in detail: spec, status, conditions and the events about them.
Without a name, every object of the kind in the namespace is described.

Secret values are never shown, only their keys.`
	cmd.Example = `  # Describe one sandbox
  msbctl describe sandbox web

  # Describe objects of different kinds
  msbctl describe sb/web netpol/pypi`
	cmd.ValidArgsFunction = completeRefs(&o.globalOptions, allKinds)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runDescribe(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

func runDescribe(ctx context.Context, c *client.Client, o *describeOptions, args []string, stdout, stderr io.Writer) int {
	kind, refs, err := parseRefs(args)
	if err != nil {
		return fail(stderr, err)
	}
	if o.allNamespaces {
		return usageFail(stderr, "describe", "-A is not supported; name the namespace with -n")
	}
	if len(refs) == 0 {
		// kubectl describes every object of the kind.
		objs, _, err := c.List(ctx, kind.Kind, o.namespace, "")
		if err != nil {
			return fail(stderr, err)
		}
		sortObjects(objs)
		for _, obj := range objs {
			refs = append(refs, objRef{kind: *kind, name: obj.GetMetadata().Name})
		}
		if len(refs) == 0 {
			fmt.Fprintf(stderr, "No resources found in %s namespace.\n", o.namespace)
			return exitOK
		}
	}
	code := exitOK
	for i, r := range refs {
		obj, err := c.Get(ctx, r.kind.Kind, o.namespace, r.name)
		if client.IsNotFound(err) {
			fmt.Fprintf(stderr, "Error: %v\n", notFound(r.kind, o.namespace, r.name))
			code = exitFail
			continue
		}
		if err != nil {
			return fail(stderr, err)
		}
		var events []v1alpha1.Event
		if r.kind.Kind != v1alpha1.KindEvent {
			events, err = c.Events(ctx, o.namespace, r.kind.Kind, r.name)
			if err != nil {
				// The object itself is still worth showing.
				fmt.Fprintf(stderr, "Warning: could not list events: %v\n", err)
			}
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		describeObject(stdout, obj, events)
	}
	return code
}

// describer writes indented "Key:  value" lines, aligned per block.
type describer struct {
	tw *tabwriter.Writer
}

func (d *describer) line(level int, key string, value string) {
	indent := strings.Repeat("  ", level)
	if key == "" {
		fmt.Fprintf(d.tw, "%s%s\n", indent, value)
		return
	}
	// A multi-line value (a script in args) continues below its key, indented.
	first, rest, multi := strings.Cut(strings.TrimRight(value, "\n"), "\n")
	fmt.Fprintf(d.tw, "%s%s:\t%s\n", indent, key, first)
	if multi {
		for _, l := range strings.Split(rest, "\n") {
			fmt.Fprintf(d.tw, "%s    %s\n", indent, l)
		}
	}
}

// flush ends an aligned block (a table follows, or the end).
func (d *describer) flush() { d.tw.Flush() }

func mapLines(d *describer, level int, key string, m map[string]string) {
	if len(m) == 0 {
		d.line(level, key, "<none>")
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 0 {
			d.line(level, key, k+"="+m[k])
		} else {
			d.line(level, "", "\t"+k+"="+m[k])
		}
	}
}

func timeString(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "<unset>"
	}
	return t.UTC().Format(time.RFC1123Z)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "<none>"
	}
	return strings.Join(s, ", ")
}

// describeObject writes obj as text, kubectl describe style.
func describeObject(w io.Writer, obj v1alpha1.Object, events []v1alpha1.Event) {
	var buf bytes.Buffer
	writeDescription(&buf, obj, events)
	// Keys with no value on their line leave alignment padding behind.
	lines := strings.SplitAfter(buf.String(), "\n")
	for _, l := range lines {
		if strings.HasSuffix(l, "\n") {
			l = strings.TrimRight(l[:len(l)-1], " ") + "\n"
		}
		io.WriteString(w, l)
	}
}

func writeDescription(w io.Writer, obj v1alpha1.Object, events []v1alpha1.Event) {
	d := &describer{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	m := obj.GetMetadata()
	d.line(0, "Name", m.Name)
	d.line(0, "Namespace", m.Namespace)
	d.line(0, "Kind", obj.GetTypeMeta().Kind)
	mapLines(d, 0, "Labels", m.Labels)
	mapLines(d, 0, "Annotations", m.Annotations)
	if src := m.Annotations[v1alpha1.AnnotationSource]; src != "" {
		d.line(0, "Source", src+" (kept applied by msbd --manifests-dir: edit the file, not the object)")
	}
	created := timeString(m.CreationTimestamp)
	if m.CreationTimestamp != nil && !m.CreationTimestamp.IsZero() {
		created += " (" + ageOf(m.CreationTimestamp) + " ago)"
	}
	d.line(0, "Created", created)
	if m.DeletionTimestamp != nil {
		d.line(0, "Deleting", timeString(m.DeletionTimestamp))
	}
	if len(m.Finalizers) > 0 {
		d.line(0, "Finalizers", strings.Join(m.Finalizers, ", "))
	}
	var conds []v1alpha1.Condition
	switch o := obj.(type) {
	case *v1alpha1.Sandbox:
		describeSandbox(d, o)
		conds = o.Status.Conditions
	case *v1alpha1.NetworkPolicy:
		describeNetworkPolicy(d, o)
		conds = o.Status.Conditions
	case *v1alpha1.Secret:
		describeSecret(d, o)
	case *v1alpha1.Event:
		d.line(0, "Object", strings.ToLower(o.InvolvedObject.Kind)+"/"+o.InvolvedObject.Name)
		d.line(0, "Type", o.Type)
		d.line(0, "Reason", o.Reason)
		d.line(0, "Message", oneLine(o.Message))
		d.line(0, "Count", strconv.Itoa(int(o.Count)))
		d.line(0, "First Seen", timeString(&o.FirstSeen))
		d.line(0, "Last Seen", timeString(&o.LastSeen))
		d.flush()
		return
	}
	if _, isSecret := obj.(*v1alpha1.Secret); !isSecret {
		if len(conds) == 0 {
			d.line(0, "Conditions", "<none>")
			d.flush()
		} else {
			d.line(0, "Conditions", "")
			d.flush()
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "  Type\tStatus\tReason\tMessage\tLastTransition")
			fmt.Fprintln(tw, "  ----\t------\t------\t-------\t--------------")
			for _, c := range conds {
				lt := "<unset>"
				if !c.LastTransitionTime.IsZero() {
					lt = ageOf(&c.LastTransitionTime) + " ago"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, orNone(c.Reason), orNone(oneLine(c.Message)), lt)
			}
			tw.Flush()
		}
	}
	d.flush()
	writeEvents(w, events)
}

func writeEvents(w io.Writer, events []v1alpha1.Event) {
	if len(events) == 0 {
		fmt.Fprintln(w, "Events:  <none>")
		return
	}
	evs := append([]v1alpha1.Event(nil), events...)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].LastSeen.Before(evs[j].LastSeen) })
	fmt.Fprintln(w, "Events:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t---\t-------")
	for _, e := range evs {
		last := e.LastSeen
		age := ageOf(&last)
		if e.Count > 1 && !e.FirstSeen.IsZero() {
			first := e.FirstSeen
			age = fmt.Sprintf("%s (x%d over %s)", age, e.Count, ageOf(&first))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, age, oneLine(e.Message))
	}
	tw.Flush()
}

func describeSandbox(d *describer, s *v1alpha1.Sandbox) {
	sp := s.Spec
	d.line(0, "Spec", "")
	d.line(1, "Image", sp.Image)
	if sp.ImagePullPolicy != "" {
		d.line(1, "Image Pull Policy", string(sp.ImagePullPolicy))
	}
	d.line(1, "Command", listOrNone(sp.Command))
	d.line(1, "Args", listOrNone(sp.Args))
	if sp.WorkingDir != "" {
		d.line(1, "Working Dir", sp.WorkingDir)
	}
	if len(sp.Env) == 0 {
		d.line(1, "Environment", "<none>")
	} else {
		d.line(1, "Environment", "")
		for _, e := range sp.Env {
			v := e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				v = fmt.Sprintf("<set to the key '%s' in secret '%s'>", e.ValueFrom.SecretKeyRef.Key, e.ValueFrom.SecretKeyRef.Name)
			}
			d.line(2, e.Name, v)
		}
	}
	r := sp.Resources
	var res []string
	if r.CPUs != "" {
		res = append(res, "cpus="+string(r.CPUs))
	}
	if r.Memory != "" {
		res = append(res, "memory="+string(r.Memory))
	}
	if r.PIDs != 0 {
		res = append(res, "pids="+strconv.FormatInt(r.PIDs, 10))
	}
	if r.Disk != "" {
		res = append(res, "disk="+string(r.Disk))
	}
	d.line(1, "Resources", listOrNone(res))
	if len(sp.Ports) == 0 {
		d.line(1, "Ports", "<none>")
	} else {
		var ps []string
		for _, p := range sp.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "TCP"
			}
			s := fmt.Sprintf("%d/%s", p.ContainerPort, proto)
			if p.HostPort != 0 {
				ip := p.HostIP
				if ip == "" {
					ip = "127.0.0.1"
				}
				s = fmt.Sprintf("%s:%d->%s", ip, p.HostPort, s)
			}
			ps = append(ps, s)
		}
		d.line(1, "Ports", strings.Join(ps, ", "))
	}
	if len(sp.Volumes) == 0 {
		d.line(1, "Volumes", "<none>")
	} else {
		d.line(1, "Volumes", "")
		for _, v := range sp.Volumes {
			mode := "rw"
			if v.ReadOnly {
				mode = "ro"
			}
			d.line(2, v.MountPath, fmt.Sprintf("from %s (%s)", v.HostPath, mode))
		}
	}
	d.line(1, "Restart Policy", orNone(string(sp.RestartPolicy)))
	d.line(1, "Operating Mode", orNone(string(sp.OperatingMode)))
	d.line(1, "Isolation", orNone(string(sp.Isolation)))
	var lc []string
	if sp.Lifecycle.TTL != nil {
		lc = append(lc, "ttl="+string(*sp.Lifecycle.TTL))
	}
	if sp.Lifecycle.ShutdownTime != nil {
		lc = append(lc, "shutdownTime="+sp.Lifecycle.ShutdownTime.UTC().Format(time.RFC3339))
	}
	d.line(1, "Lifecycle", listOrNone(lc))

	st := s.Status
	d.line(0, "Status", "")
	d.line(1, "Phase", orNone(string(st.Phase)))
	d.line(1, "Isolation", orNone(string(st.Isolation)))
	d.line(1, "Driver", orNone(st.Driver))
	d.line(1, "IP", orNone(st.IP))
	if len(st.NetworkPolicies) == 0 {
		d.line(1, "Network Policies", "<none> (no egress)")
	} else {
		d.line(1, "Network Policies", strings.Join(st.NetworkPolicies, ", "))
	}
	d.line(1, "Image Digest", orNone(st.ImageDigest))
	d.line(1, "Started", timeString(st.StartedAt))
	if st.FinishedAt != nil {
		d.line(1, "Finished", timeString(st.FinishedAt))
	}
	if st.ExpiresAt != nil {
		d.line(1, "Expires", timeString(st.ExpiresAt))
	}
	if st.ExitCode != nil {
		d.line(1, "Exit Code", strconv.Itoa(int(*st.ExitCode)))
	} else {
		d.line(1, "Exit Code", "<none>")
	}
	d.line(1, "Restarts", strconv.Itoa(int(st.RestartCount)))
	if st.Disk != nil && st.Disk.LimitBytes > 0 {
		d.line(1, "Disk", fmt.Sprintf("%s used of %s (%d%%)", humanSize(st.Disk.UsedBytes), humanSize(st.Disk.LimitBytes), st.Disk.UsedBytes*100/st.Disk.LimitBytes))
	}
	if lr := st.LastRestart; lr != nil {
		why := "the spec changed"
		if lr.Reason != "SpecChanged" {
			why = "requested (msbctl restart)"
		}
		t := lr.Time
		d.line(1, "Last Restart", timeString(&t)+": "+why)
	}
	if st.LogDroppedBytes > 0 {
		d.line(1, "Log Dropped", fmt.Sprintf("%d bytes of the oldest output (the log size cap keeps the most recent)", st.LogDroppedBytes))
	}
	d.line(1, "Observed Generation", strconv.FormatInt(st.ObservedGeneration, 10))
}

func describeNetworkPolicy(d *describer, np *v1alpha1.NetworkPolicy) {
	d.line(0, "Spec", "")
	d.line(1, "Sandbox Selector", allIfEmpty(labelString(np.Spec.SandboxSelector.MatchLabels)))
	if len(np.Spec.Egress) == 0 {
		d.line(1, "Egress", "<none> (all egress denied)")
		return
	}
	d.line(1, "Egress", "")
	for i, r := range np.Spec.Egress {
		var to []string
		for _, p := range r.To {
			switch {
			case p.Domain != "":
				to = append(to, "domain "+p.Domain)
			case p.CIDR != "":
				to = append(to, "cidr "+p.CIDR)
			case p.Group != "":
				to = append(to, "group "+p.Group)
			}
		}
		ports := "all"
		if len(r.Ports) > 0 {
			var ps []string
			for _, p := range r.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = "TCP"
				}
				ps = append(ps, fmt.Sprintf("%d/%s", p.Port, proto))
			}
			ports = strings.Join(ps, ", ")
		}
		d.line(2, fmt.Sprintf("Rule %d", i+1), "")
		d.line(3, "To", listOrNone(to))
		d.line(3, "Ports", ports)
	}
}

func describeSecret(d *describer, s *v1alpha1.Secret) {
	d.line(0, "Spec", "")
	d.line(1, "Allowed Hosts", listOrNone(s.Spec.AllowedHosts))
	d.line(1, "Substitute In", listOrNone(s.Spec.SubstituteIn))
	keys := secretKeys(s)
	if len(keys) == 0 {
		d.line(1, "Data", "<none>")
		return
	}
	d.line(1, "Data", "")
	for _, k := range keys {
		d.line(2, k, v1alpha1.Redacted)
	}
}
