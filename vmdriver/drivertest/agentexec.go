package drivertest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
)

// AgentExec is a Harness.Exec for backends whose Endpoint serves the
// msb-agent protocol (every real one). It dials the endpoint's AgentSocket,
// trying again until the agent listens (a sandbox just started may not have
// got that far), runs argv as the sandbox's default user and returns its
// standard output (standard error is dropped: the suite runs commands that
// are meant to fail).
func AgentExec(t *testing.T, d vmdriver.Driver, id string, argv ...string) (string, int, error) {
	t.Helper()
	ep, err := d.Endpoint(id)
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var c *agent.Client
	for {
		c, err = agent.Dial(ctx, ep.AgentSocket)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("the agent of %s never answered at %s: %w", id, ep.AgentSocket, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	defer c.Close()
	var stdout bytes.Buffer
	code, err := c.Exec(ctx, agent.ExecRequest{Argv: argv, Stdout: &stdout})
	if err != nil {
		return "", 0, err
	}
	return stdout.String(), code, nil
}
