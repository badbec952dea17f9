package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type waitOptions struct {
	globalOptions
	forCond string
	timeout time.Duration
}

func (o *waitOptions) flags() *flagSet {
	fs := newFlagSet("wait")
	o.register(fs)
	fs.stringVar(&o.forCond, "for", "", "condition=Ready", "what to wait for: condition=TYPE[=STATUS], delete, or jsonpath={.PATH}=VALUE")
	fs.durationVar(&o.timeout, "timeout", "", 30*time.Second, "give up after this long")
	return fs
}

func newWaitCommand(e *env) *cobra.Command {
	o := &waitOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "wait KIND/NAME... | KIND NAME... [--for=condition=Ready|--for=delete|--for=jsonpath='{.status.phase}'=Running] [--timeout=30s]"
	cmd.Short = "Wait until objects meet a condition or are deleted"
	cmd.Long = `Wait until every named object meets a condition: a condition of its status
(Ready by default), its deletion, or a field's value. It checks after every
change msbd reports, so it returns as soon as the condition holds.

On timeout it exits 1 with "error: timed out waiting for the condition on sandboxes/NAME".

Waiting for a Sandbox to be Ready stops at once, exit 1, with the phase, exit
code and reason, when Ready cannot come: the sandbox Failed, Succeeded or is
Suspended, or its image is invalid or missing under imagePullPolicy: Never.
A failed pull that msbd retries is reported and the wait goes on.`
	cmd.Example = `  # Wait up to two minutes for a sandbox to be Ready
  msbctl wait sb/web --for=condition=Ready --timeout=2m

  # Wait until a condition is False
  msbctl wait sb/web --for=condition=Ready=False

  # Wait until a sandbox is gone
  msbctl wait sb/web --for=delete

  # Wait until a job-like sandbox has finished
  msbctl wait sb/job --for=jsonpath='{.status.phase}'=Succeeded`
	cmd.Annotations = map[string]string{exitCodesAnnotation: interruptedExitCodes}
	cmd.ValidArgsFunction = completeRefs(&o.globalOptions, writableKinds)
	cmd.RegisterFlagCompletionFunc("for", fixedValues("condition=Ready", "condition=Ready=False", "delete",
		"jsonpath={.status.phase}=Running", "jsonpath={.status.phase}=Succeeded"))
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runWait(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

// waitCond is what wait checks after every change: met reports whether obj
// (nil: it does not exist) satisfies the condition.
type waitCond struct {
	met     func(obj v1alpha1.Object) bool
	ready   bool   // --for=condition=Ready(=True): a failed Sandbox ends the wait
	deleted bool   // --for=delete
	verb    string // printed on success: "condition met" or "deleted"
}

// parseWaitFor reads the value of --for.
func parseWaitFor(s string) (waitCond, error) {
	switch {
	case s == "delete":
		return waitCond{deleted: true, verb: "deleted", met: func(obj v1alpha1.Object) bool { return obj == nil }}, nil
	case strings.HasPrefix(s, "condition="):
		rest := strings.TrimPrefix(s, "condition=")
		typ, want, hasWant := strings.Cut(rest, "=")
		if !hasWant {
			want = "True"
		}
		if typ == "" || want == "" {
			return waitCond{}, usagef("--for=%s: want condition=TYPE or condition=TYPE=STATUS", s)
		}
		ready := strings.EqualFold(typ, v1alpha1.ConditionReady) && strings.EqualFold(want, "True")
		return waitCond{verb: "condition met", ready: ready, met: func(obj v1alpha1.Object) bool {
			if obj == nil {
				return false
			}
			for _, c := range conditionsOf(obj) {
				if strings.EqualFold(c.Type, typ) {
					return strings.EqualFold(string(c.Status), want)
				}
			}
			return false
		}}, nil
	case strings.HasPrefix(s, "jsonpath="):
		rest := strings.TrimPrefix(s, "jsonpath=")
		// '{.status.phase}'=Running; the quotes may reach us when no shell ran.
		rest = strings.ReplaceAll(rest, "'", "")
		if !strings.HasPrefix(rest, "{") {
			return waitCond{}, usagef("--for=%s: want jsonpath='{.path}'=VALUE", s)
		}
		end := strings.Index(rest, "}")
		if end < 0 {
			return waitCond{}, usagef("--for=%s: unclosed '{' in the path", s)
		}
		path := strings.TrimPrefix(rest[1:end], ".")
		after := rest[end+1:]
		if !strings.HasPrefix(after, "=") || path == "" {
			return waitCond{}, usagef("--for=%s: want jsonpath='{.path}'=VALUE", s)
		}
		want := strings.Trim(after[1:], `"`)
		return waitCond{verb: "condition met", met: func(obj v1alpha1.Object) bool {
			if obj == nil {
				return false
			}
			v, ok := lookupPath(obj, path)
			return ok && v == want
		}}, nil
	}
	return waitCond{}, usagef("--for=%q: want condition=TYPE[=STATUS], delete, or jsonpath='{.path}'=VALUE", s)
}

func conditionsOf(obj v1alpha1.Object) []v1alpha1.Condition {
	switch o := obj.(type) {
	case *v1alpha1.Sandbox:
		return o.Status.Conditions
	case *v1alpha1.NetworkPolicy:
		return o.Status.Conditions
	}
	return nil
}

// lookupPath follows a dotted path (status.phase, metadata.labels.app,
// status.conditions.0.type) through obj's JSON form.
func lookupPath(obj v1alpha1.Object, path string) (string, bool) {
	b, err := json.Marshal(obj)
	if err != nil {
		return "", false
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", false
	}
	for _, seg := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[seg]; !ok {
				return "", false
			}
		case []any:
			i, err := strconv.Atoi(strings.Trim(seg, "[]"))
			if err != nil || i < 0 || i >= len(x) {
				return "", false
			}
			v = x[i]
		default:
			return "", false
		}
	}
	switch x := v.(type) {
	case string:
		return x, true
	case nil:
		return "", true
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b), true
	default:
		return fmt.Sprint(x), true
	}
}

var errTimeout = errors.New("timed out")

// interruptedExitCodes is the exit code line of commands that wait.
const interruptedExitCodes = "Exit codes: 0 success, 1 failure or timeout, 2 usage error, 130 or 143 when\ninterrupted (SIGINT, SIGTERM), after printing what was still awaited."

// waitFor waits until cond is met for one object, re-checking after every
// change a watch reports.
func waitFor(ctx context.Context, c *client.Client, kind, ns, name string, cond func(v1alpha1.Object) bool) error {
	var cur v1alpha1.Object
	return listWatch(ctx, c, kind, ns, func(objs []v1alpha1.Object) bool {
		cur = nil
		for _, o := range objs {
			if o.GetMetadata().Name == name {
				cur = o
			}
		}
		return cond(cur)
	}, func(ev client.WatchEvent) bool {
		if ev.Object.GetMetadata().Name != name {
			return false
		}
		if ev.Type == "DELETED" {
			cur = nil
		} else {
			cur = ev.Object
		}
		return cond(cur)
	})
}

// listWatch is how msbctl waits on the API: it lists kind in ns (so nothing
// between the check and the watch is missed) and asks listed whether that
// is the end, then follows one watch from the list's revision, asking
// changed of each event, and lists again only when the stream ends. A
// timeout of ctx is errTimeout.
func listWatch(ctx context.Context, c *client.Client, kind, ns string, listed func([]v1alpha1.Object) bool, changed func(client.WatchEvent) bool) error {
	for {
		objs, rv, err := c.List(ctx, kind, ns, "")
		if err != nil {
			if ctx.Err() != nil {
				return errTimeout
			}
			return err
		}
		if listed(objs) {
			return nil
		}
		ch, err := c.Watch(ctx, kind, ns, rv)
		if err != nil {
			if ctx.Err() != nil {
				return errTimeout
			}
			return err
		}
		for ev := range ch {
			if ev.Type == "ERROR" || ev.Object == nil {
				break
			}
			if changed(ev) {
				return nil
			}
		}
		// The stream ended: on timeout stop, else list again.
		select {
		case <-ctx.Done():
			return errTimeout
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func timeoutError(stderr io.Writer, kind v1alpha1.KindInfo, name string) {
	fmt.Fprintf(stderr, "error: timed out waiting for the condition on %s/%s\n", kind.Plural, name)
}

func runWait(ctx context.Context, c *client.Client, o *waitOptions, args []string, stdout, stderr io.Writer) int {
	cond, err := parseWaitFor(o.forCond)
	if err != nil {
		return fail(stderr, err)
	}
	_, refs, err := parseRefs(args)
	if err != nil {
		return fail(stderr, err)
	}
	if len(refs) == 0 {
		return usageFail(stderr, "wait", "name the objects to wait for, e.g. sandbox/web")
	}
	if o.allNamespaces {
		return usageFail(stderr, "wait", "-A is not supported; name the namespace with -n")
	}
	sigCtx := ctx
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for i, r := range refs {
		pending := func() []string {
			var p []string
			for _, r := range refs[i:] {
				p = append(p, r.String())
			}
			return p
		}
		if !cond.deleted {
			// A condition on an object that does not exist will not come true.
			if _, err := c.Get(ctx, r.kind.Kind, o.namespace, r.name); err != nil {
				if client.IsNotFound(err) {
					fmt.Fprintf(stderr, "Error: %v\n", notFound(r.kind, o.namespace, r.name))
					return exitFail
				}
				if code, ok := interrupted(sigCtx); ok {
					printInterrupted(stderr, sigCtx, pending())
					return code
				}
				if ctx.Err() != nil {
					timeoutError(stderr, r.kind, r.name)
					return exitFail
				}
				return fail(stderr, err)
			}
		}
		met := cond.met
		var stopped *v1alpha1.Sandbox // a Sandbox that will not get Ready
		if cond.ready && r.kind.Kind == v1alpha1.KindSandbox {
			lastRetry := ""
			met = func(obj v1alpha1.Object) bool {
				sb, ok := obj.(*v1alpha1.Sandbox)
				if !ok {
					return false
				}
				v, msg, retrying := sandboxVerdict(sb)
				if retrying && msg != lastRetry {
					lastRetry = msg
					fmt.Fprintf(stderr, "%s: %s; msbd retries the pull, still waiting\n", r, msg)
				}
				if v == verdictFailed || v == verdictFinished {
					stopped = sb
					return true
				}
				return cond.met(obj)
			}
		}
		err := waitFor(ctx, c, r.kind.Kind, o.namespace, r.name, met)
		if code, ok := interrupted(sigCtx); ok && err != nil {
			printInterrupted(stderr, sigCtx, pending())
			return code
		}
		if errors.Is(err, errTimeout) {
			timeoutError(stderr, r.kind, r.name)
			return exitFail
		}
		if err != nil {
			return fail(stderr, err)
		}
		if stopped != nil {
			_, msg, _ := sandboxVerdict(stopped)
			fmt.Fprintf(stderr, "error: %s will not become Ready: %s; %s\n", r, msg, howToStart(stopped))
			return exitFail
		}
		fmt.Fprintf(stdout, "%s %s\n", r, cond.verb)
	}
	return exitOK
}
