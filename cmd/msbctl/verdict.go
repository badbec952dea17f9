package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"msb.dev/msb/apis/v1alpha1"
)

// verdict is what a Sandbox's status says about waiting for it to be Ready.
type verdict int

const (
	verdictWaiting  verdict = iota // not there yet: keep waiting
	verdictReady                   // Ready=True for the current spec
	verdictFinished                // ended for good (Succeeded, Suspended): Ready will not come
	verdictFailed                  // failed, or stuck where msbd will not retry
)

// sandboxVerdict reads sb's status for waiting on Ready: only a status written
// for sb's current generation counts. msg describes the state for the user
// (phase, exit code, reason and message); retrying is set, with the reason in
// msg, while msbd retries a failed image pull.
func sandboxVerdict(sb *v1alpha1.Sandbox) (v verdict, msg string, retrying bool) {
	if sb.Status.ObservedGeneration < sb.Metadata.Generation {
		return verdictWaiting, "", false
	}
	ready := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady)
	switch sb.Status.Phase {
	case v1alpha1.PhaseFailed:
		return verdictFailed, describeState(sb), false
	case v1alpha1.PhaseSucceeded, v1alpha1.PhaseSuspended:
		return verdictFinished, describeState(sb), false
	}
	if ready == nil {
		return verdictWaiting, "", false
	}
	if ready.Status == v1alpha1.ConditionTrue {
		return verdictReady, "", false
	}
	if ready.Status != v1alpha1.ConditionFalse {
		return verdictWaiting, "", false
	}
	switch {
	case stuckReasons[ready.Reason]:
		return verdictFailed, describeState(sb), false
	case ready.Reason == v1alpha1.ReasonPullFailed && sb.Spec.ImagePullPolicy == v1alpha1.PullNever:
		// Never pulls: only an image imported by hand ends this, and
		// nothing retries on its own when that happens.
		return verdictFailed, describeState(sb) + "; msbd starts it once 'msbctl image pull' brings the image", false
	case ready.Reason == v1alpha1.ReasonPullFailed:
		return verdictWaiting, ready.Message, true
	}
	return verdictWaiting, "", false
}

// describeState says in one line what phase sb is in and why: "phase Failed,
// exit code 3: Error: the sandbox command exited with code 3".
func describeState(sb *v1alpha1.Sandbox) string {
	var b strings.Builder
	phase := sb.Status.Phase
	if phase == "" {
		phase = v1alpha1.PhasePending
	}
	fmt.Fprintf(&b, "phase %s", phase)
	if sb.Status.ExitCode != nil && (phase == v1alpha1.PhaseFailed || phase == v1alpha1.PhaseSucceeded) {
		fmt.Fprintf(&b, ", exit code %d", *sb.Status.ExitCode)
	}
	if c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status != v1alpha1.ConditionTrue && c.Reason != "" {
		fmt.Fprintf(&b, ": %s", c.Reason)
		if c.Message != "" {
			fmt.Fprintf(&b, ": %s", c.Message)
		}
	}
	return b.String()
}

// meantToFinish reports whether a Sandbox that ends Succeeded did what it was
// for: a command that is not restarted when it exits 0.
func meantToFinish(sb *v1alpha1.Sandbox) bool {
	return sb.Spec.RestartPolicy != v1alpha1.RestartAlways
}

// howToStart says how to run a sandbox that is not running again.
func howToStart(sb *v1alpha1.Sandbox) string {
	name := sb.Metadata.Name
	switch sb.Status.Phase {
	case v1alpha1.PhaseSuspended:
		return fmt.Sprintf("resume it with: msbctl resume %s", name)
	case v1alpha1.PhaseFailed, v1alpha1.PhaseSucceeded:
		return fmt.Sprintf("start it again with: msbctl restart %s", name)
	}
	return fmt.Sprintf("see msbctl describe sandbox %s", name)
}

// signalCause is the cause of a context canceled by SIGINT or SIGTERM.
type signalCause struct{ sig os.Signal }

func (s signalCause) Error() string { return "interrupted by " + s.sig.String() }

// notifyContext is signal.NotifyContext that remembers which signal came, so
// commands that give up on a signal can exit as shells expect (130, 143).
func notifyContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(signalCause{s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// interrupted returns the exit code for a ctx ended by a signal (128+signo)
// and true, or 0 and false.
func interrupted(ctx context.Context) (int, bool) {
	var sc signalCause
	if errors.As(context.Cause(ctx), &sc) {
		if s, ok := sc.sig.(syscall.Signal); ok {
			return 128 + int(s), true
		}
		return 130, true
	}
	return 0, false
}

// printInterrupted tells what a wait still waited for when a signal ended it.
func printInterrupted(stderr interface{ Write([]byte) (int, error) }, ctx context.Context, pending []string) {
	sort.Strings(pending)
	var sc signalCause
	errors.As(context.Cause(ctx), &sc)
	what := "interrupted"
	if sc.sig == syscall.SIGTERM {
		what = "terminated"
	}
	if len(pending) == 0 {
		fmt.Fprintf(stderr, "error: %s\n", what)
		return
	}
	fmt.Fprintf(stderr, "error: %s while still waiting for %s\n", what, strings.Join(pending, ", "))
}
