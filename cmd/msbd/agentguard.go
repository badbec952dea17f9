package main

import (
	"context"
	"errors"

	"msb.dev/msb/vmdriver/agent"
)

// probeAgent is the reconciler's ProbeAgent: an error only for an agent that
// accepted a connection but did not answer within agent.CallTimeout. One
// that is not listening (starting, or gone with its sandbox) is the exit
// watcher's business, not an unresponsive agent.
func probeAgent(ctx context.Context, socket string) error {
	if err := agent.Probe(ctx, socket); errors.Is(err, agent.ErrUnresponsive) {
		return err
	}
	return nil
}
