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
	var sb v1alpha1.Sandbox
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, &sb); err != nil {
		return storeError(err, "sandboxes", ns, name)
	}
	if s.rt == nil {
		return &apiError{code: http.StatusNotImplemented, reason: "NotImplemented", msg: "this server has no sandbox runtime"}
	}
	path, err := s.rt.AgentSocket(&sb)
	if err != nil {
		return badRequest("cannot forward to sandbox %q in namespace %q: %v", name, ns, err)
	}
	ac, _, err := s.agents.get(r.Context(), path)
	if err != nil {
		return &apiError{code: http.StatusServiceUnavailable, reason: "ServiceUnavailable",
			msg: fmt.Sprintf("cannot reach the agent of sandbox %q in namespace %q: %v", name, ns, err)}
	}
	dctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	upstream, err := ac.DialPort(dctx, port)
	cancel()
	if err != nil {
		return &apiError{code: http.StatusBadGateway, reason: "PortUnreachable",
			msg: fmt.Sprintf("sandbox %q in namespace %q: nothing accepts connections on 127.0.0.1:%d: %v", name, ns, port, err)}
	}
	defer upstream.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("portforward: hijack: %w", err)
	}
	defer conn.Close()
	if rec, ok := w.(*recorder); ok {
		rec.status = http.StatusSwitchingProtocols
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + v1alpha1.PortForwardProtocol + "\r\n\r\n"); err != nil {
		return nil
	}
	if err := brw.Flush(); err != nil {
		return nil
	}
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
