package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// suspend, resume and restart change one Sandbox in place, as a user editing
// its manifest would: spec.operatingMode, or the restart annotation.

type lifecycleOptions struct {
	globalOptions
	timeout time.Duration
}

func (o *lifecycleOptions) flags(name string) *flagSet {
	fs := newFlagSet(name)
	o.register(fs)
	fs.durationVar(&o.timeout, "timeout", "", 30*time.Second, "how long to wait until msbd has acted on it")
	return fs
}

func newSuspendCommand(e *env) *cobra.Command {
	return modeCommand(e, "suspend", v1alpha1.ModeSuspended, "Stop a sandbox and keep it, to resume later",
		`Suspend sandboxes: set spec.operatingMode to Suspended. msbd stops the
sandbox's processes and keeps its writable layer, so "msbctl resume" starts it
again with its files as they were. It waits until msbd reports the sandbox
Suspended.`,
		`  # Suspend a sandbox
  msbctl suspend web`)
}

func newResumeCommand(e *env) *cobra.Command {
	return modeCommand(e, "resume", v1alpha1.ModeRunning, "Start a suspended sandbox again",
		`Resume sandboxes: set spec.operatingMode to Running. msbd starts the sandbox
again on its kept writable layer. It returns once msbd has taken the change;
wait for Ready with "msbctl wait sb/NAME --for=condition=Ready".`,
		`  # Resume a sandbox and wait until it runs
  msbctl resume web && msbctl wait sb/web --for=condition=Ready`)
}

func modeCommand(e *env, name string, mode v1alpha1.OperatingMode, short, long, example string) *cobra.Command {
	o := &lifecycleOptions{}
	fs := o.flags(name)
	cmd := fs.cmd
	cmd.Use = name + " NAME|sandbox/NAME..."
	cmd.Short = short
	cmd.Long = long
	cmd.Example = example
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runLifecycle(ctx, c, o, name, args, e.stdout, e.stderr, func(sb *v1alpha1.Sandbox) (bool, error) {
			if sb.Spec.OperatingMode == mode {
				return false, nil
			}
			sb.Spec.OperatingMode = mode
			return true, nil
		}, func(sb *v1alpha1.Sandbox, gen int64) bool {
			if sb.Status.ObservedGeneration < gen {
				return false
			}
			if mode == v1alpha1.ModeSuspended {
				return sb.Status.Phase == v1alpha1.PhaseSuspended
			}
			return sb.Status.Phase != v1alpha1.PhaseSuspended
		})
	})
	return cmd
}

func newRestartCommand(e *env) *cobra.Command {
	o := &lifecycleOptions{}
	fs := o.flags("restart")
	cmd := fs.cmd
	cmd.Use = "restart NAME|sandbox/NAME..."
	cmd.Short = "Start a fresh run of a sandbox's spec"
	cmd.Long = `Restart sandboxes: stop the current run (if it runs) and start the same spec
again on the same writable layer, whatever its restartPolicy; a Failed or
Succeeded sandbox runs again. The restart is counted in status.restartCount
and shown by describe ("Last Restart").

msbctl sets the annotation ` + v1alpha1.AnnotationRestartedAt + ` to the current time, as
kubectl rollout restart does, and waits until msbd has started the new run.`
	cmd.Example = `  # Run a finished job again, and follow its output
  msbctl restart job && msbctl logs job -f`
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		stamp := time.Now().UTC().Format(time.RFC3339Nano)
		return runLifecycle(ctx, c, o, "restart", args, e.stdout, e.stderr, func(sb *v1alpha1.Sandbox) (bool, error) {
			if sb.Spec.OperatingMode == v1alpha1.ModeSuspended {
				return false, fmt.Errorf("sandbox %q is suspended: resume it with 'msbctl resume %s'", sb.Metadata.Name, sb.Metadata.Name)
			}
			if sb.Metadata.Annotations == nil {
				sb.Metadata.Annotations = map[string]string{}
			}
			sb.Metadata.Annotations[v1alpha1.AnnotationRestartedAt] = stamp
			return true, nil
		}, func(sb *v1alpha1.Sandbox, _ int64) bool {
			return sb.Status.RestartedAt == stamp
		})
	})
	return cmd
}

// runLifecycle applies change to each named Sandbox (retrying on a conflict
// with another writer) and waits until done says msbd acted on it.
func runLifecycle(ctx context.Context, c *client.Client, o *lifecycleOptions, verb string, args []string, stdout, stderr io.Writer,
	change func(*v1alpha1.Sandbox) (bool, error), done func(sb *v1alpha1.Sandbox, gen int64) bool) int {
	if len(args) == 0 {
		return usageFail(stderr, verb, "name the sandboxes, e.g. msbctl %s web", verb)
	}
	if o.allNamespaces {
		return usageFail(stderr, verb, "-A is not supported; name the namespace with -n")
	}
	past := map[string]string{"suspend": "suspended", "resume": "resumed", "restart": "restarted"}[verb]
	code := exitOK
	for _, a := range args {
		name, err := parseSandboxName(a)
		if err != nil {
			return fail(stderr, err)
		}
		var gen int64
		changed := false
		for attempt := 0; ; attempt++ {
			obj, err := c.Get(ctx, v1alpha1.KindSandbox, o.namespace, name)
			if err != nil {
				if client.IsNotFound(err) {
					err = fmt.Errorf("sandbox %q not found in namespace %q", name, o.namespace)
				}
				return fail(stderr, err)
			}
			sb := obj.(*v1alpha1.Sandbox)
			if changed, err = change(sb); err != nil {
				return fail(stderr, err)
			}
			gen = sb.Metadata.Generation
			if !changed {
				break
			}
			out, err := c.Update(ctx, sb)
			if client.IsConflict(err) && attempt < 5 {
				continue // someone else wrote it meanwhile: read it again
			}
			if err != nil {
				return fail(stderr, err)
			}
			gen = out.GetMetadata().Generation
			break
		}
		if !changed {
			fmt.Fprintf(stdout, "sandbox/%s already %s\n", name, map[string]string{"suspend": "suspended", "resume": "running"}[verb])
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, o.timeout)
		err = waitFor(wctx, c, v1alpha1.KindSandbox, o.namespace, name, func(obj v1alpha1.Object) bool {
			sb, ok := obj.(*v1alpha1.Sandbox)
			return ok && done(sb, gen)
		})
		cancel()
		if err != nil {
			if sig, ok := interrupted(ctx); ok {
				printInterrupted(stderr, ctx, []string{"sandbox/" + name})
				return sig
			}
			fmt.Fprintf(stderr, "error: sandbox/%s: msbd did not act on the change within %s (%v); see msbctl describe sandbox %s\n", name, o.timeout, err, name)
			code = exitFail
			continue
		}
		fmt.Fprintf(stdout, "sandbox/%s %s\n", name, past)
	}
	return code
}
