package reconciler

import (
	"fmt"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// terminationReason names how a run ended, as Kubernetes' terminated state
// does: OOMKilled only when the driver saw the memory limit's OOM killer end
// it, never for a command that exited 137 by itself.
func terminationReason(state vmdriver.State, code int) string {
	switch {
	case state.OOMKilled:
		return ReasonOOMKilled
	case code == 0:
		return ReasonCompleted
	default:
		return "Error"
	}
}

// oomMessage says that the memory limit ended the sandbox's command and
// what to do about it.
func oomMessage(sb *v1alpha1.Sandbox, code int) string {
	limit := "its memory limit"
	if m := sb.Spec.Resources.Memory; m != "" {
		limit = "its memory limit (" + string(m) + ")"
	}
	return fmt.Sprintf("the sandbox command was killed for exceeding %s (OOMKilled, exit code %d); raise spec.resources.memory or use less memory", limit, code)
}
