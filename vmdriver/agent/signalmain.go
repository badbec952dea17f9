package agent

import (
	"context"
	"fmt"
	"syscall"

	"golang.org/x/crypto/ssh"
)

// signalMainRequest is the SSH global request that passes a signal to the
// sandbox's main command, as a signal to the agent would. A microVM's
// agent cannot be signalled from the host (its process is in the guest),
// so its driver stops the sandbox this way.
const signalMainRequest = "signal-main@msb.dev"

type signalMainPayload struct{ Signal string }

// SignalMain asks the agent at socketPath to pass sig to the main command.
func SignalMain(ctx context.Context, socketPath string, sig syscall.Signal) error {
	c, err := Dial(ctx, socketPath)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	ok, _, err := c.c.SendRequest(signalMainRequest, true, ssh.Marshal(signalMainPayload{Signal: signalName(sig)}))
	if err != nil {
		return fmt.Errorf("agent %s: %w", socketPath, err)
	}
	if !ok {
		return fmt.Errorf("agent %s: refused to signal the main command", socketPath)
	}
	return nil
}

// globalRequests answers a connection's global requests: signal-main when
// the server has somewhere to send it, nothing else.
func (s *Server) globalRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok := false
		if req.Type == signalMainRequest && s.signalMain != nil {
			var p signalMainPayload
			if ssh.Unmarshal(req.Payload, &p) == nil {
				if sig := signalNum(p.Signal); sig != 0 {
					s.signalMain(sig)
					ok = true
				}
			}
		}
		if req.WantReply {
			req.Reply(ok, nil)
		}
	}
}
