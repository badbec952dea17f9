package apiserver

import (
	"fmt"
	"strings"
	"syscall"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver/agent"
)

// oomCounter is implemented by Runtimes that can count the OOM kills in a
// sandbox's workload (reconciler.Runtime through the driver).
type oomCounter interface {
	OOMKills(sb *v1alpha1.Sandbox) (uint64, error)
}

// eventRecorder is implemented by stores that keep events (*store.Store).
type eventRecorder interface {
	RecordEvent(ref v1alpha1.ObjectReference, eventType, reason, message string) error
}

// oomKills reads the sandbox's OOM kill count before an exec; ok is false
// when the runtime cannot tell.
func (s *server) oomKills(sb *v1alpha1.Sandbox) (n uint64, ok bool) {
	oc, isCounter := s.rt.(oomCounter)
	if !isCounter {
		return 0, false
	}
	n, err := oc.OOMKills(sb)
	return n, err == nil
}

// execOOMKilled tells whether an exec that ended with st was killed by the
// memory limit — SIGKILL while the workload's OOM kill count rose — and if
// so leaves a Warning event on the sandbox. A command that exited 137 by
// itself has no signal and is never called OOMKilled.
func (s *server) execOOMKilled(sb *v1alpha1.Sandbox, argv []string, st agent.ExitStatus, before uint64) bool {
	if st.Signal != syscall.SIGKILL {
		return false
	}
	after, ok := s.oomKills(sb)
	if !ok || after <= before {
		return false
	}
	if er, ok := s.store.(eventRecorder); ok {
		limit := ""
		if m := sb.Spec.Resources.Memory; m != "" {
			limit = " (" + string(m) + ")"
		}
		ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: sb.Metadata.Namespace, Name: sb.Metadata.Name, UID: sb.Metadata.UID}
		msg := fmt.Sprintf("exec %q was killed for exceeding the sandbox's memory limit%s (OOMKilled, exit code %d)", execLabel(argv), limit, st.Code)
		if err := er.RecordEvent(ref, v1alpha1.EventWarning, v1alpha1.ExecReasonOOMKilled, msg); err != nil {
			s.log.Warn("recording event", "sandbox", sb.Metadata.Name, "reason", v1alpha1.ExecReasonOOMKilled, "err", err)
		}
	}
	return true
}

// execLabel names an exec in an event by its command alone: arguments may
// carry values (tokens, passwords) that must not end up in events.
func execLabel(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return strings.TrimSpace(argv[0])
}
