package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

type portForwardOptions struct {
	globalOptions
	address string
}

func (o *portForwardOptions) flags() *flagSet {
	fs := newFlagSet("port-forward")
	o.register(fs)
	fs.stringVar(&o.address, "address", "", "127.0.0.1", "local address to listen on")
	return fs
}

func newPortForwardCommand(e *env) *cobra.Command {
	o := &portForwardOptions{}
	fs := o.flags()
	cmd := fs.cmd
	cmd.Use = "port-forward NAME|sandbox/NAME [LOCAL:]REMOTE... [--address 127.0.0.1]"
	cmd.Short = "Forward local ports to ports inside a sandbox"
	cmd.Long = `Listen on local ports and forward each connection to a port on the sandbox's
own loopback (127.0.0.1 inside it), through msbd and the sandbox's agent, until
interrupted. It works for a sandbox without any network, as kubectl's
port-forward does for a pod, and reaches nothing but the sandbox itself.

LOCAL 0 picks a free port; the line "Forwarding from ..." names it.`
	cmd.Example = `  # Reach a server listening on port 8000 in the sandbox at localhost:18000
  msbctl port-forward web 18000:8000

  # The same port on both sides, and a free local port for another
  msbctl port-forward web 8000 0:9090`
	cmd.ValidArgsFunction = completeSandbox(&o.globalOptions)
	cmd.RunE = e.action(fs, &o.globalOptions, false, func(ctx context.Context, c *client.Client, args []string) int {
		return runPortForward(ctx, c, o, args, e.stdout, e.stderr)
	})
	return cmd
}

type portPair struct{ local, remote int }

func parsePortPair(s string) (portPair, error) {
	l, r, ok := strings.Cut(s, ":")
	if !ok {
		l, r = s, s
	}
	lp, err1 := strconv.Atoi(l)
	rp, err2 := strconv.Atoi(r)
	if err1 != nil || err2 != nil || lp < 0 || lp > 65535 || rp < 1 || rp > 65535 {
		return portPair{}, usagef("%q: want [LOCAL:]REMOTE ports, e.g. 18000:8000", s)
	}
	return portPair{lp, rp}, nil
}

func runPortForward(ctx context.Context, c *client.Client, o *portForwardOptions, args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		return usageFail(stderr, "port-forward", "name the sandbox and the ports, e.g. msbctl port-forward web 18000:8000")
	}
	name, err := parseSandboxName(args[0])
	if err != nil {
		return fail(stderr, err)
	}
	var pairs []portPair
	for _, a := range args[1:] {
		p, err := parsePortPair(a)
		if err != nil {
			return fail(stderr, err)
		}
		pairs = append(pairs, p)
	}
	obj, err := c.Get(ctx, v1alpha1.KindSandbox, o.namespace, name)
	if err != nil {
		if client.IsNotFound(err) {
			err = fmt.Errorf("sandbox %q not found in namespace %q", name, o.namespace)
		}
		return fail(stderr, err)
	}
	if sb := obj.(*v1alpha1.Sandbox); sb.Status.Phase != v1alpha1.PhaseRunning {
		return fail(stderr, fmt.Errorf("sandbox %q is not running (%s); %s", name, describeState(sb), howToStart(sb)))
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, p := range pairs {
		ln, err := net.Listen("tcp", net.JoinHostPort(o.address, strconv.Itoa(p.local)))
		if err != nil {
			return fail(stderr, fmt.Errorf("listen on %s port %d: %w", o.address, p.local, err))
		}
		lns = append(lns, ln)
		fmt.Fprintf(stdout, "Forwarding from %s -> %d\n", ln.Addr(), p.remote)
	}
	var mu sync.Mutex // stderr
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				local, err := ln.Accept()
				if err != nil {
					return // closed at the end
				}
				go func() {
					if err := forwardOne(ctx, c, o.namespace, name, pairs[i].remote, local); err != nil && ctx.Err() == nil {
						mu.Lock()
						fmt.Fprintf(stderr, "error: forwarding a connection to port %d: %v\n", pairs[i].remote, err)
						mu.Unlock()
					}
				}()
			}
		}()
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
	return exitOK
}

// forwardOne carries one local connection to the sandbox's port and back.
func forwardOne(ctx context.Context, c *client.Client, ns, name string, port int, local net.Conn) error {
	defer local.Close()
	remote, err := c.PortForward(ctx, ns, name, port)
	if err != nil {
		return err
	}
	defer remote.Close()
	stop := context.AfterFunc(ctx, func() { local.Close(); remote.Close() })
	defer stop()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(remote, local)
		halfClose(remote)
		errc <- err
	}()
	_, err = io.Copy(local, remote)
	halfClose(local)
	if err2 := <-errc; err == nil {
		err = err2
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func halfClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
