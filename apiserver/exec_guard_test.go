package apiserver_test

import (
	"errors"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

func (r *fakeRuntime) OOMKills(sb *v1alpha1.Sandbox) (uint64, error) {
	r.mu.Lock()
	f := r.oomKills
	r.mu.Unlock()
	if f == nil {
		return 0, errors.New("no OOM counter")
	}
	return f()
}

// An exec is OOMKilled only when SIGKILL ended it while the sandbox's OOM
// kill count rose: then the result says so and a Warning event names it.
func TestExecOOMKilled(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	e.rt.setAgentSock(startAgent(t, e.dir))
	for _, tc := range []struct {
		name   string
		argv   []string
		rises  bool
		reason string
	}{
		{"killed while the count rose", []string{"sh", "-c", "kill -9 $$"}, true, v1alpha1.ExecReasonOOMKilled},
		{"killed, count unchanged", []string{"sh", "-c", "kill -9 $$"}, false, ""},
		{"exit 137 while the count rose", []string{"sh", "-c", "exit 137"}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n uint64
			e.rt.mu.Lock()
			e.rt.oomKills = func() (uint64, error) {
				if tc.rises {
					n++
				}
				return n, nil
			}
			e.rt.mu.Unlock()
			var res v1alpha1.ExecResult
			code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{Command: tc.argv, Result: &res})
			if err != nil || code != 137 || res.Reason != tc.reason {
				t.Errorf("exec: code %d err %v reason %q; want 137 and reason %q", code, err, res.Reason, tc.reason)
			}
		})
	}
	evs, err := e.store.Events("default", nil)
	if err != nil {
		t.Fatal(err)
	}
	var oom []string
	for _, ev := range evs {
		if ev.Reason == v1alpha1.ExecReasonOOMKilled {
			oom = append(oom, ev.Type+" "+ev.Message)
		}
	}
	if len(oom) != 1 || !strings.HasPrefix(oom[0], `Warning exec "sh"`) {
		t.Errorf("OOMKilled events %q, want one Warning naming the exec by its command only", oom)
	}
}
