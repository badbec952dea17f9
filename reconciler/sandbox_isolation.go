package reconciler

import (
	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// ReasonSharedIDRange: the sandbox runs in the host id range every such
// sandbox shares, not in one of its own (see vmdriver.IsolationAdvisor).
const ReasonSharedIDRange = "SharedIDRange"

// warnIsolation tells, in a Warning event, where the driver runs the
// sandbox it just created less isolated than it should.
func (r *SandboxReconciler) warnIsolation(d vmdriver.Driver, sb *v1alpha1.Sandbox, id string) {
	ia, ok := d.(vmdriver.IsolationAdvisor)
	if !ok {
		return
	}
	for _, msg := range ia.IsolationWarnings(id) {
		r.event(sb, v1alpha1.EventWarning, ReasonSharedIDRange, msg)
	}
}
