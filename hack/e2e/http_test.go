package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
)

// httpPut sends a raw PUT to msbd over its unix socket and returns the status.
func httpPut(socket, path string, body []byte) int {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, _ := http.NewRequest(http.MethodPut, "http://msbd"+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}
