package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
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
	prune     bool
	applySet  string
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
	fs.boolVar(&o.prune, "prune", "", false, "delete the objects an earlier apply of the same set created that the manifests no longer hold")
	fs.stringVar(&o.applySet, "applyset", "", "", "name of the apply set (label "+LabelApplySet+"); default: the name of the one directory or file given with -f")
	return fs
}

func newApplyCommand(e *env) *cobra.Command {
	o := &applyOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "apply -f FILE|DIR|- [-f ...] [-R] [--prune [--applyset NAME]] [--dry-run=none|client|server] [--wait [--timeout=60s]]"
	cmd.Short = "Create or update objects from manifests, all in one transaction"
	cmd.Long = `Create or update the objects of manifests, all in one transaction.

Every object is validated before anything is written: if one is invalid,
all problems are listed (file:line: field: message) and nothing changes.

--wait is apply followed by "wait --for=condition=Ready" on every applied
Sandbox, in the same process. It stops early, exit 1, with the phase, exit
code and reason, when one fails or cannot start (a missing or invalid image
under imagePullPolicy: Never); a sandbox that runs to completion (Succeeded)
is a success when its restartPolicy is Never or OnFailure.

--prune keeps a directory of manifests and msbd in step, as kubectl's ApplySet
does: every applied object is labelled ` + LabelApplySet + `=SET (SET is --applyset,
by default the directory's name), and objects with that label that the
manifests no longer hold are deleted. Objects without the label are never
touched. With --dry-run it only says what it would prune; "msbctl diff
--prune" shows it as a diff.`
	cmd.Example = `  # Apply one manifest
  msbctl apply -f sandbox.yaml

  # Apply a directory of manifests and its subdirectories
  msbctl apply -f manifests/ -R

  # Apply a manifest from standard input
  cat sb.yaml | msbctl apply -f -

  # Let msbd check a manifest without writing anything
  msbctl apply -f sb.yaml --dry-run=server

  # Apply and wait until the sandboxes are Ready, in one command
  msbctl apply -f sb.yaml --wait

  # Keep msbd in step with a git directory: what was removed from it goes
  msbctl apply -f manifests/ -R --prune --dry-run
  msbctl apply -f manifests/ -R --prune`
	cmd.Annotations = map[string]string{exitCodesAnnotation: interruptedExitCodes}
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
	set := ""
	if o.prune || o.applySet != "" {
		var err error
		if set, err = applySetName(o.applySet, o.files); err != nil {
			return fail(stderr, err)
		}
		if err := labelApplySet(objs, set); err != nil {
			return fail(stderr, err)
		}
	}
	// pruneNow deletes (or on a dry run names) what the set no longer holds.
	pruneNow := func(w io.Writer) int {
		if !o.prune {
			return exitOK
		}
		cands, err := pruneCandidates(ctx, c, set, objs)
		if err != nil {
			return fail(stderr, err)
		}
		return prune(ctx, c, cands, o.dryRun, w, stderr)
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
		return pruneNow(stdout)
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
		if code := pruneNow(stderr); code != exitOK {
			return code
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
	if code := pruneNow(stdout); code != exitOK {
		return code
	}
	if o.wait && o.dryRun == dryRunNone {
		return waitApplied(ctx, c, results, o.timeout, stdout, stderr)
	}
	return exitOK
}

// settleAfterReady is how long apply --wait keeps watching a Sandbox after it
// turned Ready: a command that exits at once (exit 3, or not found) has its
// Ready=True for a few milliseconds before msbd records the failure, and
// "ready" must not be the answer then. Like kubectl's minReadySeconds, a
// short time the sandbox must stay up to count as started.
const settleAfterReady = 300 * time.Millisecond

// waitApplied waits until every applied Sandbox is Ready for its current
// spec, or done for good (Succeeded, Suspended): what `apply` + `wait
// --for=condition=Ready` do, in one process, for all of them at once. A
// Sandbox that fails (or is stuck where msbd will not retry) ends the wait at
// once with its phase, exit code and reason, exit 1; a signal ends it with
// what was still awaited, exit 130 or 143.
func waitApplied(ctx context.Context, c *client.Client, results []client.ApplyResult, timeout time.Duration, stdout, stderr io.Writer) int {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		name string
		last *v1alpha1.Sandbox
		err  error
	}
	var names []string
	var mu sync.Mutex // stderr, pending
	pending := map[string]bool{}
	done := make(chan outcome)
	for _, r := range results {
		if r.Kind != v1alpha1.KindSandbox {
			continue
		}
		names = append(names, r.Name)
		pending["sandbox/"+r.Name] = true
		go func() {
			var last *v1alpha1.Sandbox
			lastRetry := ""
			cond := func(obj v1alpha1.Object) bool {
				sb, ok := obj.(*v1alpha1.Sandbox)
				if !ok {
					return false
				}
				last = sb
				v, msg, retrying := sandboxVerdict(sb)
				if retrying && msg != lastRetry {
					lastRetry = msg
					mu.Lock()
					fmt.Fprintf(stderr, "sandbox/%s: %s; msbd retries the pull, still waiting\n", r.Name, msg)
					mu.Unlock()
				}
				return v != verdictWaiting
			}
			err := waitFor(wctx, c, r.Kind, r.Namespace, r.Name, cond)
			if err == nil && last != nil {
				if v, _, _ := sandboxVerdict(last); v == verdictReady {
					// Stay a moment: a command that dies at once fails now.
					sctx, scancel := context.WithTimeout(wctx, settleAfterReady)
					waitFor(sctx, c, r.Kind, r.Namespace, r.Name, func(obj v1alpha1.Object) bool {
						if sb, ok := obj.(*v1alpha1.Sandbox); ok {
							last = sb
							v, _, _ := sandboxVerdict(sb)
							return v == verdictFailed || v == verdictFinished
						}
						return false
					})
					scancel()
					if wctx.Err() != nil {
						err = errTimeout
					}
				}
			}
			done <- outcome{r.Name, last, err}
		}()
	}
	ki, _ := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	code := exitOK
	for range names {
		o := <-done
		mu.Lock()
		delete(pending, "sandbox/"+o.name)
		mu.Unlock()
		if sig, ok := interrupted(ctx); ok && o.err != nil {
			if code == exitOK || code == exitFail {
				var left []string
				mu.Lock()
				for n := range pending {
					left = append(left, n)
				}
				mu.Unlock()
				printInterrupted(stderr, ctx, append(left, "sandbox/"+o.name))
				code = sig
			}
			continue
		}
		if errors.Is(o.err, errTimeout) && errors.Is(wctx.Err(), context.Canceled) {
			continue // given up on after another one failed
		}
		switch {
		case errors.Is(o.err, errTimeout):
			timeoutError(stderr, ki, o.name)
			if o.last != nil {
				fmt.Fprintf(stderr, "  last seen: %s\n", describeState(o.last))
			}
			code = exitFail
			continue // the others time out too: each is told
		case o.err != nil:
			code = fail(stderr, o.err)
		default:
			v, msg, _ := sandboxVerdict(o.last)
			switch {
			case v == verdictReady:
				fmt.Fprintf(stdout, "sandbox/%s ready\n", o.name)
			case v == verdictFinished && o.last.Status.Phase == v1alpha1.PhaseSuspended:
				fmt.Fprintf(stdout, "sandbox/%s suspended\n", o.name)
			case v == verdictFinished && meantToFinish(o.last):
				fmt.Fprintf(stdout, "sandbox/%s succeeded (exit code 0)\n", o.name)
			default:
				fmt.Fprintf(stderr, "error: sandbox/%s failed: %s (see msbctl describe sandbox %s)\n", o.name, msg, o.name)
				code = exitFail
			}
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
