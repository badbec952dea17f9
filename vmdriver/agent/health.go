package agent

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Deadlines on every call to an agent. A sandbox can freeze its agent (a
// SIGSTOP from the host, memory or pid starvation, a debugger): the
// kernel still accepts connections on the socket, so without a deadline a
// caller would wait forever. These bound the handshake, the opening of a
// session and, while a command runs, the agent's answer to a ping.
var (
	// CallTimeout is how long the agent has to answer a handshake, a
	// session request or a ping.
	CallTimeout = 5 * time.Second
	// KeepaliveInterval is how often a running exec pings its agent.
	KeepaliveInterval = 5 * time.Second
)

// ReasonUnresponsive is the condition reason and the word in every error
// about an agent that does not answer in time.
const ReasonUnresponsive = "AgentUnresponsive"

// ErrUnresponsive is wrapped by every error of a call the agent did not
// answer within CallTimeout.
var ErrUnresponsive = errors.New(ReasonUnresponsive + ": the sandbox's agent does not answer")

func unresponsive(what string) error {
	return fmt.Errorf("%w (no answer to %s within %s: it is stopped, starved or being debugged)", ErrUnresponsive, what, CallTimeout)
}

// pingRequest is a global request the agent answers (with "false", as it
// answers every unknown one): any answer proves it is alive.
const pingRequest = "ping@msb.dev"

// Ping checks that the agent still answers on this connection. If it does
// not within CallTimeout the connection is closed (the sessions on it
// would hang too) and the error wraps ErrUnresponsive; ctx only ends the
// wait early.
func (c *Client) Ping(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.c.SendRequest(pingRequest, true, nil)
		errc <- err
	}()
	t := time.NewTimer(CallTimeout)
	defer t.Stop()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("agent connection: %w", err)
		}
		return nil
	case <-t.C:
		c.unresponsive.Store(true)
		c.c.Close()
		return unresponsive("a ping")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Probe connects to the agent at socketPath and pings it: nil when it
// answers, an error wrapping ErrUnresponsive when it accepted the
// connection but did not answer in time, another error when it is not
// there at all (not started yet, or gone).
//
// Unlike Dial it tries to connect once: a socket that is missing or
// refuses is an answer, not something to wait for.
func Probe(ctx context.Context, socketPath string) error {
	dctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	conn, err := dialNoFollow(dctx, socketPath)
	if err != nil {
		return fmt.Errorf("agent %s: %w", socketPath, err)
	}
	c, err := newClient(dctx, conn, socketPath)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = unresponsive("the handshake")
		}
		return fmt.Errorf("agent %s: %w", socketPath, err)
	}
	defer c.Close()
	return c.Ping(ctx)
}

// watch pings the agent every KeepaliveInterval while a command runs and
// closes dead once it stops answering.
func (c *Client) watch(ctx context.Context, dead chan<- struct{}) {
	t := time.NewTicker(KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Ping(ctx); err != nil {
				if errors.Is(err, ErrUnresponsive) {
					close(dead)
				}
				return
			}
		}
	}
}
