package apiserver

import (
	"net/http"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver/agent"
)

// copy serves msbctl cp: POST .../sandboxes/NAME/cp?direction=from|to&path=P
// (&into=true), upgraded to the exec stream protocol. The tar stream travels
// as stdin (to the sandbox) or stdout (from it); the agent reads or writes it
// itself, and the exit frame says whether it worked (code 0) or not (code 1,
// the reason on stderr). msbd only relays: the stream is checked where it is
// unpacked, by the agent in the sandbox or by the client on the host.
func (s *server) copy(w http.ResponseWriter, r *http.Request) error {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), v1alpha1.ExecProtocol) {
		return badRequest("cp needs Connection: Upgrade and Upgrade: %s", v1alpha1.ExecProtocol)
	}
	q := r.URL.Query()
	cp := &agent.CopyRequest{Direction: q.Get("direction"), Path: q.Get("path")}
	switch cp.Direction {
	case agent.CopyFromSandbox, agent.CopyToSandbox:
	default:
		return badRequest("cp: direction=%q: want %s or %s", cp.Direction, agent.CopyFromSandbox, agent.CopyToSandbox)
	}
	if cp.Path == "" || strings.ContainsRune(cp.Path, 0) {
		return badRequest("cp: path: give the path in the sandbox")
	}
	switch v := q.Get("into"); v {
	case "", "false":
	case "true":
		cp.Into = true
	default:
		return badRequest("cp: into=%q: want true or false", v)
	}
	return s.stream(w, r, agent.ExecRequest{Copy: cp}, cp.Direction == agent.CopyToSandbox)
}
