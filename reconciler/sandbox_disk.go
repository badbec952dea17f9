package reconciler

import (
	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
)

// diskBytes is the sandbox's disk limit: spec.resources.disk when set ("0"
// is unlimited), else msbd's default. It is left out of the spec hash: the
// driver makes the disk once, so a change applies to a re-created sandbox
// and restarts nothing.
func (r *SandboxReconciler) diskBytes(sb *v1alpha1.Sandbox) int64 {
	if q := sb.Spec.Resources.Disk; q != "" {
		return q.Value()
	}
	return r.DefaultDiskBytes
}

// observeDisk records the use of the sandbox's bounded disk, rounded up to
// a step of 1/256 of the limit (at least 1 MiB: 40 MiB of a 10Gi disk), so
// that writes do not rewrite the status at every reconcile.
func (r *SandboxReconciler) observeDisk(d vmdriver.Driver, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) {
	dr, ok := d.(vmdriver.DiskReporter)
	if !ok {
		return
	}
	used, limit, ok := dr.DiskUsage(sb.Metadata.UID)
	if !ok {
		if st.Phase == v1alpha1.PhaseRunning {
			st.Disk = nil
		}
		return
	}
	step := max(int64(1<<20), limit/256)
	st.Disk = &v1alpha1.DiskStatus{UsedBytes: (used + step - 1) / step * step, LimitBytes: limit}
}
