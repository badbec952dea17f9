package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// Values of --dry-run.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

type applyOptions struct {
	globalOptions
	files     []string
	recursive bool
	dryRun    string
	output    string
	wait      bool
	timeout   time.Duration
}

func (o *applyOptions) flags() *flagSet {
	fs := newFlagSet("apply")
	o.register(fs)
	fs.sliceVar(&o.files, "filename", "f", "manifest file, directory or - for stdin (repeatable)")
	fs.boolVar(&o.recursive, "recursive", "R", false, "read directories given with -f recursively")
	fs.optStringVar(&o.dryRun, "dry-run", dryRunNone, dryRunClient, "none, client (validate only, never write) or server (the server checks and reports, writes nothing)")
	fs.stringVar(&o.output, "output", "o", "", "print the objects instead of a summary: yaml, json or name")
	fs.boolVar(&o.wait, "wait", "", false, "then wait until every applied Sandbox is Ready (or has finished); a Failed one exits 1")
	fs.durationVar(&o.timeout, "timeout", "", 60*time.Second, "how long --wait waits")
	return fs
}

func newApplyCommand(e *env) *cobra.Command {
	o := &applyOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "apply -f FILE|DIR|- [-f ...] [-R] [--dry-run=none|client|server] [--wait [--timeout=60s]]"
	cmd.Short = "Create or update objects from manifests, all in one transaction"
	cmd.Long = `Create or update the objects of manifests, all in one transaction.

Every object is validated before anything is written: if one is invalid,
all problems are listed (file:line: field: message) and nothing changes.

--wait is apply followed by "wait --for=condition=Ready" on every applied
Sandbox, in the same process; it stops early, exit 1, when one fails.`
	cmd.Example = `  # Apply one manifest
  msbctl apply -f sandbox.yaml

  # Apply a directory of manifests and its subdirectories
  msbctl apply -f manifests/ -R

  # Apply a manifest from standard input
  cat sb.yaml | msbctl apply -f -

  # Let msbd check a manifest without writing anything
  msbctl apply -f sb.yaml --dry-run=server

  # Apply and wait until the sandboxes are Ready, in one command
  msbctl apply -f sb.yaml --wait`
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	manifestFlag(fs)
	cmd.RegisterFlagCompletionFunc("dry-run", fixedValues(dryRunNone, dryRunClient, dryRunServer))
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outYAML, outJSON, outName))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runApply(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

// loadManifests decodes and validates files, setting each object's namespace.
// On any problem it prints every one of them and returns ok=false.
func loadManifests(files []string, recursive bool, g globalOptions, nsGiven bool, cmd string, stderr io.Writer) ([]v1alpha1.Object, bool) {
	docs, err := v1alpha1.DecodeFiles(files, recursive, stdinReader)
	if err != nil {
		n := printErrorLines(stderr, err)
		fmt.Fprintf(stderr, "Error: %d %s in the manifests; nothing was %s\n", n, plural(n, "problem", "problems"), doneWord(cmd))
		return nil, false
	}
	if len(docs) == 0 {
		fmt.Fprintf(stderr, "Error: no objects found in %s\n", strings.Join(files, ", "))
		return nil, false
	}
	var objs []v1alpha1.Object
	problems := 0
	for _, doc := range docs {
		m := doc.Object.GetMetadata()
		switch {
		case m.Namespace == "":
			m.Namespace = g.namespace
		case nsGiven && m.Namespace != g.namespace:
			fmt.Fprintf(stderr, "%s:%d: metadata.namespace: %q does not match --namespace %q; drop one of them\n", doc.Source, doc.Line, m.Namespace, g.namespace)
			problems++
			continue
		}
		if err := doc.Validate(); err != nil {
			printErrorLines(stderr, err)
			problems++
			continue
		}
		objs = append(objs, doc.Object)
	}
	if problems > 0 {
		fmt.Fprintf(stderr, "Error: %d of %d objects are invalid; nothing was %s\n", problems, len(docs), doneWord(cmd))
		return nil, false
	}
	return objs, true
}

func doneWord(cmd string) string {
	switch cmd {
	case "delete":
		return "deleted"
	case "diff":
		return "compared"
	}
	return "applied"
}

// printErrorLines prints an error with one problem per line and returns
// how many lines it printed.
func printErrorLines(w io.Writer, err error) int {
	var errs interface{ Unwrap() []error }
	if errors.As(err, &errs) {
		n := 0
		for _, e := range errs.Unwrap() {
			n += printErrorLines(w, e)
		}
		return n
	}
	lines := strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return len(lines)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func runApply(ctx context.Context, c *client.Client, o *applyOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageFail(stderr, "apply", "unexpected argument %q (manifests are given with -f)", args[0])
	}
	if len(o.files) == 0 {
		return usageFail(stderr, "apply", "no manifests given: use -f FILE, -f DIR or -f -")
	}
	switch o.dryRun {
	case dryRunNone, dryRunClient, dryRunServer:
	default:
		return usageFail(stderr, "apply", "--dry-run=%q: want none, client or server", o.dryRun)
	}
	if o.output != "" && o.output != outYAML && o.output != outJSON && o.output != outName {
		return usageFail(stderr, "apply", "-o %q: want yaml, json or name", o.output)
	}
	if o.allNamespaces {
		return usageFail(stderr, "apply", "-A cannot be used with apply")
	}
	if o.changed("timeout") && !o.wait {
		return usageFail(stderr, "apply", "--timeout is how long --wait waits: give --wait too")
	}
	objs, ok := loadManifests(o.files, o.recursive, o.globalOptions, o.changed("namespace"), "apply", stderr)
	if !ok {
		return exitFail
	}

	if o.dryRun == dryRunClient {
		if o.output != "" {
			if err := printObjects(stdout, o.output, objs, len(objs) == 1, false); err != nil {
				return fail(stderr, err)
			}
			return exitOK
		}
		for _, obj := range objs {
			// Say configured when the object exists and the server answers;
			// an unreachable server is no error for a client dry run.
			action := "created"
			gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			m := obj.GetMetadata()
			if _, err := c.Get(gctx, obj.GetTypeMeta().Kind, m.Namespace, m.Name); err == nil {
				action = "configured"
			}
			cancel()
			fmt.Fprintf(stdout, "%s %s (dry run)\n", refName(obj), action)
		}
		return exitOK
	}

	results, err := c.Apply(ctx, objs, o.dryRun == dryRunServer)
	if err != nil {
		return fail(stderr, err)
	}
	if o.output != "" {
		// Show what the server stored (or would store).
		var out []v1alpha1.Object
		for _, r := range results {
			obj, err := c.Get(ctx, r.Kind, r.Namespace, r.Name)
			if err != nil {
				if o.dryRun == dryRunServer && client.IsNotFound(err) {
					continue
				}
				return fail(stderr, err)
			}
			out = append(out, obj)
		}
		if err := printObjects(stdout, o.output, out, len(out) == 1, false); err != nil {
			return fail(stderr, err)
		}
		if o.wait && o.dryRun == dryRunNone {
			// stdout holds the objects only.
			return waitApplied(ctx, c, results, o.timeout, io.Discard, stderr)
		}
		return exitOK
	}
	suffix := ""
	if o.dryRun == dryRunServer {
		suffix = " (server dry run)"
	}
	for _, r := range results {
		fmt.Fprintf(stdout, "%s/%s %s%s\n", strings.ToLower(r.Kind), r.Name, r.Action, suffix)
	}
	if o.wait && o.dryRun == dryRunNone {
		return waitApplied(ctx, c, results, o.timeout, stdout, stderr)
	}
	return exitOK
}

// waitApplied waits until every applied Sandbox is Ready for its current
// spec, or done for good (Succeeded, Suspended): what `apply` + `wait
// --for=condition=Ready` do, in one process, for all of them at once; a
// Sandbox that fails ends the wait at once with its reason instead of at the
// timeout.
func waitApplied(ctx context.Context, c *client.Client, results []client.ApplyResult, timeout time.Duration, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		name string
		last *v1alpha1.Sandbox
		err  error
	}
	var names []string
	done := make(chan outcome)
	for _, r := range results {
		if r.Kind != v1alpha1.KindSandbox {
			continue
		}
		names = append(names, r.Name)
		go func() {
			var last *v1alpha1.Sandbox
			err := waitFor(ctx, c, r.Kind, r.Namespace, r.Name, func(obj v1alpha1.Object) bool {
				sb, ok := obj.(*v1alpha1.Sandbox)
				if !ok {
					return false
				}
				last = sb
				// Only a status written for this very spec counts.
				if sb.Status.ObservedGeneration < sb.Metadata.Generation {
					return false
				}
				switch sb.Status.Phase {
				case v1alpha1.PhaseFailed, v1alpha1.PhaseSucceeded, v1alpha1.PhaseSuspended:
					return true
				}
				c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady)
				return c != nil && (c.Status == v1alpha1.ConditionTrue || stuckReasons[c.Reason])
			})
			done <- outcome{r.Name, last, err}
		}()
	}
	ki, _ := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	code := exitOK
	for range names {
		o := <-done
		if errors.Is(o.err, errTimeout) && errors.Is(ctx.Err(), context.Canceled) {
			continue // given up on after another one failed
		}
		switch {
		case errors.Is(o.err, errTimeout):
			timeoutError(stderr, ki, o.name)
			if o.last != nil {
				if c := v1alpha1.FindCondition(o.last.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Message != "" {
					fmt.Fprintf(stderr, "  last seen: phase %s, Ready=%s %s: %s\n", o.last.Status.Phase, c.Status, c.Reason, c.Message)
				}
			}
			code = exitFail
			continue // the others time out too: each is told
		case o.err != nil:
			code = fail(stderr, o.err)
		case o.last.Status.Phase == v1alpha1.PhaseFailed || stuckReasons[readyReason(o.last)]:
			msg := ""
			if c := v1alpha1.FindCondition(o.last.Status.Conditions, v1alpha1.ConditionReady); c != nil {
				msg = ": " + c.Reason
				if c.Message != "" {
					msg += ": " + c.Message
				}
			}
			fmt.Fprintf(stderr, "error: sandbox/%s failed%s (see msbctl describe sandbox %s)\n", o.name, msg, o.name)
			code = exitFail
		default:
			state := "ready"
			if o.last.Status.Phase != v1alpha1.PhaseRunning {
				state = strings.ToLower(string(o.last.Status.Phase))
			}
			fmt.Fprintf(stdout, "sandbox/%s %s\n", o.name, state)
		}
		if code != exitOK {
			cancel() // stop waiting for the others
		}
	}
	return code
}

// stuckReasons are Ready=False reasons msbd does not retry until the spec (or
// the daemon) changes: waiting for Ready past them is waiting for nothing.
var stuckReasons = map[string]bool{
	"InvalidImage": true, // a hostile or malformed image
	"AgentMissing": true, // msbd cannot start sandboxes at all
	// the host cannot give the isolation asked for (no KVM or libkrun for
	// isolation: microvm, or the recorded driver is gone) until msbd restarts
	"MicroVMUnavailable": true,
	"DriverUnavailable":  true,
}

func readyReason(sb *v1alpha1.Sandbox) string {
	if c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == v1alpha1.ConditionFalse {
		return c.Reason
	}
	return ""
}
