package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Publisher forwards host ports to sandbox ports (a Sandbox's published
// ports). It listens in msbd's namespace and dials the sandbox's address
// with SO_MARK set, which is how the nftables rules tell msbd's forwarded
// connections (let in) from anything else trying to reach a sandbox
// (dropped).
type Publisher struct {
	log    *slog.Logger
	dialer net.Dialer
	onDial func(net.Conn) // tests: sees each connection to a sandbox

	mu     sync.Mutex
	closed bool
	byID   map[string]map[string]*published // sandbox ID → host address → port
	wg     sync.WaitGroup
}

// published is one listening host port.
type published struct {
	ln     net.Listener
	target netip.AddrPort
	ctx    context.Context // cancelled on unpublish: aborts dials
	cancel context.CancelFunc
	conns  map[net.Conn]struct{}
}

// NewPublisher returns a Publisher marking its sandbox-side sockets with
// mark (0: no mark, for tests without CAP_NET_ADMIN).
func NewPublisher(mark uint32, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{
		log:    log,
		dialer: net.Dialer{Timeout: 10 * time.Second, Control: markControl(mark)},
		byID:   map[string]map[string]*published{},
	}
}

// Publish makes hostIP:hostPort (TCP) forward to sandbox; hostIP "" means
// 127.0.0.1. Publishing the same host address again for the same sandbox
// is a no-op (or retargets it), so a level-triggered caller may call it on
// every reconcile. A port already taken gives "127.0.0.1:18000 is already
// in use", which the caller turns into a Sandbox condition.
func (p *Publisher) Publish(id string, hostIP string, hostPort uint16, sandbox netip.AddrPort) error {
	if hostIP == "" {
		hostIP = "127.0.0.1"
	}
	if hostPort == 0 {
		return errors.New("host port 0 cannot be published")
	}
	addr := net.JoinHostPort(hostIP, strconv.Itoa(int(hostPort)))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("publisher closed")
	}
	if pp := p.byID[id][addr]; pp != nil {
		pp.target = sandbox // new connections go to the new address
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s is already in use", addr)
		}
		return fmt.Errorf("publish %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pp := &published{ln: ln, target: sandbox, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	if p.byID[id] == nil {
		p.byID[id] = map[string]*published{}
	}
	p.byID[id][addr] = pp
	p.wg.Add(1)
	go p.serve(pp)
	return nil
}

// Unpublish closes all of sandbox id's host ports and their connections.
// It is idempotent.
func (p *Publisher) Unpublish(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pp := range p.byID[id] {
		p.stop(pp)
	}
	delete(p.byID, id)
}

// Close unpublishes everything and waits for every goroutine to end.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	for id, m := range p.byID {
		for _, pp := range m {
			p.stop(pp)
		}
		delete(p.byID, id)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// stop closes pp's listener and connections; p.mu is held.
func (p *Publisher) stop(pp *published) {
	pp.cancel()
	pp.ln.Close()
	for c := range pp.conns {
		c.Close()
	}
}

func (p *Publisher) serve(pp *published) {
	defer p.wg.Done()
	var pause time.Duration
	for {
		c, err := pp.ln.Accept()
		if err != nil {
			if pp.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.log.Warn("published port: accept", "addr", pp.ln.Addr(), "err", err)
			select {
			case <-time.After(pause):
				continue
			case <-pp.ctx.Done():
				return
			}
		}
		pause = 0
		if !p.track(pp, c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.forward(pp, c)
	}
}

// track adds c to pp's connections unless pp was stopped meanwhile.
func (p *Publisher) track(pp *published, c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pp.ctx.Err() != nil {
		return false
	}
	pp.conns[c] = struct{}{}
	return true
}

func (p *Publisher) untrack(pp *published, c net.Conn) {
	p.mu.Lock()
	delete(pp.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Publisher) forward(pp *published, c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(pp, c)
	p.mu.Lock()
	target := pp.target
	p.mu.Unlock()
	s, err := p.dialer.DialContext(pp.ctx, "tcp", target.String())
	if err != nil {
		p.log.Debug("published port: dial sandbox", "target", target, "err", err)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // the host client sees a reset, not a clean EOF
		}
		return
	}
	if !p.track(pp, s) {
		s.Close()
		return
	}
	defer p.untrack(pp, s)
	if p.onDial != nil {
		p.onDial(s)
	}
	pipe(c, s)
}
