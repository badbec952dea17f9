package client

import (
	"context"
	"net/http"

	"msb.dev/msb/apis/v1alpha1"
)

// Stats returns a running sandbox's live resource use against its limits.
func (c *Client) Stats(ctx context.Context, namespace, name string) (v1alpha1.SandboxStats, error) {
	var st v1alpha1.SandboxStats
	ki, err := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	if err != nil {
		return st, err
	}
	err = c.do(ctx, http.MethodGet, objectPath(ki, namespace, name)+"/stats", nil, nil, &st)
	return st, err
}
