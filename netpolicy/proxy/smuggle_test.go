package proxy

import (
	"errors"
	"testing"
)

// Request heads that would let a second request, with another Host, pass
// unread to the upstream are refused (found in a security review).
func TestRequestHeadSmugglingRefused(t *testing.T) {
	for name, head := range map[string]string{
		"chunked HTTP/1.0": "POST / HTTP/1.0\r\nHost: allowed.test\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
		"h2c upgrade":      "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
		"h2c among others": "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: websocket, H2C\r\n\r\n",
	} {
		if _, _, err := parseRequestHead([]byte(head)); !errors.Is(err, errBadHTTP) {
			t.Errorf("%s: err %v, want errBadHTTP", name, err)
		}
	}
	// Still fine: chunked HTTP/1.1, a websocket upgrade.
	for name, head := range map[string]string{
		"chunked HTTP/1.1": "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n",
		"websocket":        "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		if _, _, err := parseRequestHead([]byte(head)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
