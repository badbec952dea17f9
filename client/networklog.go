package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"msb.dev/msb/apis/v1alpha1"
)

// NetworkLog calls fn with the sandbox's recent network decisions (DNS
// answers and connections, allowed and denied), oldest first; with follow it
// keeps calling it with new ones until ctx ends.
func (c *Client) NetworkLog(ctx context.Context, namespace, name string, follow bool, fn func(v1alpha1.NetworkDecision) error) error {
	resp, err := c.sandboxStream(ctx, namespace, name, "networklog", follow)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var d v1alpha1.NetworkDecision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return fmt.Errorf("network log from msbd: %w", err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !(follow && ctx.Err() != nil) {
		return err
	}
	return nil
}
