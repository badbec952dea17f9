package apiserver

import "msb.dev/msb/apis/v1alpha1"

// agentWatcher is implemented by Runtimes that want to hear at once of an
// agent that did not answer a call in time (reconciler.Runtime, which then
// probes it and marks the sandbox AgentUnresponsive).
type agentWatcher interface {
	AgentUnresponsive(sb *v1alpha1.Sandbox)
}

func (s *server) agentUnresponsive(sb *v1alpha1.Sandbox) {
	if w, ok := s.rt.(agentWatcher); ok {
		w.AgentUnresponsive(sb)
	}
}
