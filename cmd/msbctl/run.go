package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type runOptions struct {
	globalOptions
	image   string
	env     []string
	labels  []string
	rm      bool
	stdin   bool
	tty     bool
	restart string
	dryRun  string
	output  string
	timeout time.Duration
}

func (o *runOptions) flags() *flagSet {
	fs := newFlagSet("run")
	o.register(fs)
	fs.stringVar(&o.image, "image", "", "", "image of the sandbox (required), as in spec.image")
	fs.sliceVar(&o.env, "env", "e", "set an environment variable, K=V (repeatable)")
	fs.sliceVar(&o.labels, "labels", "l", "set labels, k=v[,k=v] (repeatable)")
	fs.boolVar(&o.rm, "rm", "", false, "delete the sandbox when the attached command ends (needs -i)")
	fs.boolVar(&o.stdin, "stdin", "i", false, "attach: run the command with your standard input, in the sandbox once it is Ready")
	fs.boolVar(&o.tty, "tty", "t", false, "with -i, give the command a terminal")
	fs.stringVar(&o.restart, "restart", "", "", "restartPolicy: Never (default), OnFailure or Always")
	fs.optStringVar(&o.dryRun, "dry-run", dryRunNone, dryRunClient, "client: print or check the Sandbox without creating it")
	fs.stringVar(&o.output, "output", "o", "", "print the Sandbox instead of a summary: yaml, json or name")
	fs.durationVar(&o.timeout, "timeout", "", 2*time.Minute, "with -i, how long to wait for the sandbox to be Ready")
	fs.endsAtCommand = true
	fs.flags().SetInterspersed(false)
	return fs
}

func newRunCommand(e *env) *cobra.Command {
	o := &runOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "run NAME --image IMG [-e K=V] [-l k=v] [--restart Never|OnFailure|Always] [--rm] [-i] [-t] [-o yaml --dry-run] [-- CMD [ARGS...]]"
	cmd.Short = "Create a sandbox from the command line, or run a throwaway shell"
	cmd.Long = `Create a Sandbox without writing YAML. It is an ordinary Sandbox afterwards:
get, describe, logs, exec and delete it as any other. CMD, when given, is its
command (spec.command, replacing the image's entrypoint).

With -i (and -t for a terminal) msbctl attaches instead: the sandbox runs an
idle command (the image needs sleep), msbctl waits until it is Ready and runs
CMD (default sh) in it as exec -i does; --rm deletes the sandbox afterwards,
so "msbctl run tmp --rm -it --image IMG" is a throwaway shell.

-o yaml --dry-run prints the manifest it would create, to keep in git.`
	cmd.Example = `  # Run a web server in a sandbox
  msbctl run web --image python:3.12-slim -l app=web -- python3 -m http.server 8000

  # A throwaway shell
  msbctl run tmp --rm -it --image busybox

  # Write the manifest instead of creating the sandbox
  msbctl run job --image busybox --restart OnFailure -o yaml --dry-run -- sh -c 'echo hi' > job.yaml`
	cmd.Annotations = map[string]string{exitCodesAnnotation: "Exit codes: 0 success, 1 failure, 2 usage error; with -i the command's own."}
	cmd.ValidArgsFunction = cobra.NoFileCompletions
	cmd.RegisterFlagCompletionFunc("restart", fixedValues(string(v1alpha1.RestartNever), string(v1alpha1.RestartOnFailure), string(v1alpha1.RestartAlways)))
	cmd.RegisterFlagCompletionFunc("output", fixedValues(outYAML, outJSON, outName))
	// -i execs: the exec path forwards signals itself.
	cmd.RunE = e.action(fs, &o.globalOptions, true, func(ctx context.Context, c *client.Client, args []string) int {
		return runRun(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

// idleCommand keeps an attached sandbox alive for the exec'd command.
var idleCommand = []string{"sleep", "2147483647"}

// sandboxFromFlags builds the Sandbox run creates.
func sandboxFromFlags(o *runOptions, name string, cmd []string) (*v1alpha1.Sandbox, error) {
	sb := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: o.namespace},
		Spec:     v1alpha1.SandboxSpec{Image: o.image, RestartPolicy: v1alpha1.RestartPolicy(o.restart)},
	}
	if o.stdin {
		sb.Spec.Command = idleCommand
	} else if len(cmd) > 0 {
		sb.Spec.Command = cmd
	}
	for _, e := range o.env {
		k, v, ok := cutEnv(e)
		if !ok || k == "" {
			return nil, usagef("-e %q: want K=V", e)
		}
		sb.Spec.Env = append(sb.Spec.Env, v1alpha1.EnvVar{Name: k, Value: v})
	}
	for _, l := range o.labels {
		for _, kv := range strings.Split(l, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, usagef("-l %q: want k=v", kv)
			}
			if sb.Metadata.Labels == nil {
				sb.Metadata.Labels = map[string]string{}
			}
			sb.Metadata.Labels[k] = v
		}
	}
	if errs := v1alpha1.Validate(sb); len(errs) > 0 {
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		return nil, fmt.Errorf("the sandbox would be invalid:\n  %s", strings.Join(msgs, "\n  "))
	}
	return sb, nil
}

func runRun(ctx context.Context, c *client.Client, o *runOptions, pos []string, stdout, stderr io.Writer) int {
	if len(pos) == 0 {
		return usageFail(stderr, "run", "name the sandbox, e.g. msbctl run web --image busybox")
	}
	name, cmd := pos[0], pos[1:]
	switch {
	case o.image == "":
		return usageFail(stderr, "run", "--image is required")
	case o.rm && !o.stdin:
		return usageFail(stderr, "run", "--rm deletes the sandbox when the attached command ends: give -i too")
	case o.tty && !o.stdin:
		return usageFail(stderr, "run", "-t gives the attached command a terminal: give -i too")
	case o.dryRun != dryRunNone && o.dryRun != dryRunClient:
		return usageFail(stderr, "run", "--dry-run=%q: want client", o.dryRun)
	case o.dryRun == dryRunClient && o.stdin:
		return usageFail(stderr, "run", "--dry-run cannot attach (-i)")
	case o.output != "" && o.output != outYAML && o.output != outJSON && o.output != outName:
		return usageFail(stderr, "run", "-o %q: want yaml, json or name", o.output)
	case o.allNamespaces:
		return usageFail(stderr, "run", "-A cannot be used with run")
	}
	if err := ttyNeedsTerminal(o.tty, o.stdin, stdinReader); err != nil {
		return fail(stderr, err)
	}
	sb, err := sandboxFromFlags(o, name, cmd)
	if err != nil {
		return fail(stderr, err)
	}
	if o.dryRun == dryRunClient {
		if o.output == "" {
			fmt.Fprintf(stdout, "sandbox/%s created (dry run)\n", name)
			return exitOK
		}
		if err := printObjects(stdout, o.output, []v1alpha1.Object{sb}, true, false); err != nil {
			return fail(stderr, err)
		}
		return exitOK
	}
	created, err := c.Create(ctx, sb)
	if err != nil {
		if client.IsAlreadyExists(err) {
			return fail(stderr, fmt.Errorf("sandbox %q already exists in namespace %q: pick another name, or 'msbctl delete sb %s'", name, o.namespace, name))
		}
		return fail(stderr, err)
	}
	if o.output != "" {
		if err := printObjects(stdout, o.output, []v1alpha1.Object{created}, true, false); err != nil {
			return fail(stderr, err)
		}
	} else if !o.stdin {
		fmt.Fprintf(stdout, "sandbox/%s created\n", name)
	}
	if !o.stdin {
		return exitOK
	}
	if o.rm {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := c.Delete(dctx, v1alpha1.KindSandbox, o.namespace, name); err != nil && !client.IsNotFound(err) {
				fmt.Fprintf(stderr, "Error: deleting sandbox %q: %v\n", name, err)
				return
			}
			fmt.Fprintf(stderr, "sandbox %q deleted\n", name)
		}()
	}
	if code := waitRunReady(ctx, c, o, name, stderr); code != exitOK {
		return code
	}
	if len(cmd) == 0 {
		cmd = []string{"sh"}
	}
	eo := &execOptions{globalOptions: o.globalOptions, stdin: true, tty: o.tty}
	return runExec(ctx, c, eo, append([]string{name}, cmd...), stdout, stderr)
}

// waitRunReady waits until the attached sandbox is Ready, or says why it
// will not be.
func waitRunReady(ctx context.Context, c *client.Client, o *runOptions, name string, stderr io.Writer) int {
	sigCtx, stop := notifyContext(ctx)
	defer stop()
	wctx, cancel := context.WithTimeout(sigCtx, o.timeout)
	defer cancel()
	var last *v1alpha1.Sandbox
	err := waitFor(wctx, c, v1alpha1.KindSandbox, o.namespace, name, func(obj v1alpha1.Object) bool {
		sb, ok := obj.(*v1alpha1.Sandbox)
		if !ok {
			return false
		}
		last = sb
		v, _, _ := sandboxVerdict(sb)
		return v != verdictWaiting
	})
	if code, ok := interrupted(sigCtx); ok {
		printInterrupted(stderr, sigCtx, []string{"sandbox/" + name})
		return code
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: timed out waiting for sandbox/%s to be Ready\n", name)
		if last != nil {
			fmt.Fprintf(stderr, "  last seen: %s\n", describeState(last))
		}
		return exitFail
	}
	if v, msg, _ := sandboxVerdict(last); v != verdictReady {
		fmt.Fprintf(stderr, "error: sandbox/%s will not become Ready: %s\n", name, msg)
		return exitFail
	}
	return exitOK
}
