package apiserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// portForward connects one client connection to a port on the sandbox's own
// loopback, through its agent (see agent.DialPort): the sandbox needs no
// network, and nothing but its loopback is reachable this way.
func (s *server) portForward(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), v1alpha1.PortForwardProtocol) {
		return badRequest("portforward needs Connection: Upgrade and Upgrade: %s", v1alpha1.PortForwardProtocol)
	}
	port, err := strconv.Atoi(r.URL.Query().Get("port"))
	if err != nil || port <= 0 || port > 65535 {
		return badRequest("port=%q: want a port from 1 to 65535", r.URL.Query().Get("port"))
	}
	_, _, ac, _, err := s.sandboxAgent(r.Context(), ns, name, "forward to")
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	upstream, err := ac.DialPort(dctx, port)
	cancel()
	if err != nil {
		return &apiError{code: http.StatusBadGateway, reason: "PortUnreachable",
			msg: fmt.Sprintf("sandbox %q in namespace %q: nothing accepts connections on 127.0.0.1:%d: %v", name, ns, port, err)}
	}
	defer upstream.Close()
	conn, brw, err := upgrade(w, v1alpha1.PortForwardProtocol)
	if err != nil {
		return err
	}
	if conn == nil {
		return nil
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		// What the client sent, then its end; a broken client connection
		// ends the forward both ways.
		if _, err := io.Copy(upstream, brw.Reader); err != nil {
			upstream.Close()
			return
		}
		closeWrite(upstream)
	}()
	go func() {
		defer wg.Done()
		io.Copy(conn, upstream)
		closeWrite(conn)
	}()
	wg.Wait()
	return nil
}

// closeWrite half-closes c where it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
