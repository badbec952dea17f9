package apiserver

import (
	"context"
	"encoding/json"
	"net/http"

	"msb.dev/msb/apis/v1alpha1"
)

// NetworkLog is implemented by a Runtime that enforces network policy: it
// gives a sandbox's recent network decisions, then (follow) new ones as
// they are made, until ctx ends.
type NetworkLog interface {
	// NetworkLogEnabled is false when msbd runs without sandbox networking.
	NetworkLogEnabled() bool
	NetworkDecisions(ctx context.Context, sb *v1alpha1.Sandbox, follow bool, emit func(v1alpha1.NetworkDecision) error) error
}

// networkLog streams a sandbox's network decisions as JSON lines.
func (s *server) networkLog(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	follow, err := boolParam(r.URL.Query(), "follow")
	if err != nil {
		return err
	}
	var sb v1alpha1.Sandbox
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, &sb); err != nil {
		return storeError(err, "sandboxes", ns, name)
	}
	nl, ok := s.rt.(NetworkLog)
	if !ok || !nl.NetworkLogEnabled() {
		return &apiError{code: http.StatusNotImplemented, reason: "NotImplemented",
			msg: "msbd runs without sandbox networking (--network=false): sandboxes have loopback only and there is no network log; restart msbd without --network=false to enforce NetworkPolicies"}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w: w, rc: http.NewResponseController(w)}
	if err := fw.rc.Flush(); err != nil {
		return nil
	}
	enc := json.NewEncoder(fw)
	err = nl.NetworkDecisions(r.Context(), &sb, follow, func(d v1alpha1.NetworkDecision) error { return enc.Encode(d) })
	if err != nil && r.Context().Err() == nil {
		s.log.Warn("network log stream ended", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name), "err", err)
	}
	return nil
}
