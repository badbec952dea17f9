package apiserver

import (
	"net/http"

	"msb.dev/msb/apis/v1alpha1"
)

// statsRuntime is the part of Runtime that reads a sandbox's resource use;
// a Runtime without it answers 501.
type statsRuntime interface {
	Stats(sb *v1alpha1.Sandbox) (v1alpha1.SandboxStats, error)
}

// stats answers GET .../sandboxes/NAME/stats: live CPU, memory and pids use
// against the limits, read from the sandbox's cgroups.
func (s *server) stats(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	var sb v1alpha1.Sandbox
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, &sb); err != nil {
		return storeError(err, "sandboxes", ns, name)
	}
	sr, ok := s.rt.(statsRuntime)
	if !ok {
		return &apiError{code: http.StatusNotImplemented, reason: "NotImplemented", msg: "this server cannot read sandboxes' resource use"}
	}
	st, err := sr.Stats(&sb)
	if err != nil {
		return badRequest("cannot read the resource use of sandbox %q in namespace %q: %v", name, ns, err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
