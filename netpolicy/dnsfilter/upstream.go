package dnsfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCacheTTL caps how long an upstream answer is cached.
const maxCacheTTL = time.Hour

// resolve returns the upstream answer for name/qtype and how many seconds
// it spent in the cache. The message is shared with the cache: callers
// must not modify it or its records.
func (f *Filter) resolve(name string, qtype uint16) (*dns.Msg, uint32, error) {
	key := cacheKey{name, qtype}
	if f.cache != nil {
		if m, age, ok := f.cache.get(key); ok {
			return m, age, nil
		}
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(dns.DefaultMsgSize, false)
	m, err := f.exchange(f.ctx, q)
	if err != nil {
		return nil, 0, err
	}
	if len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, q.Question[0].Name) || m.Question[0].Qtype != qtype {
		return nil, 0, errors.New("upstream answered another question")
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return nil, 0, fmt.Errorf("upstream answered %s", dns.RcodeToString[m.Rcode])
	}
	if f.cache != nil {
		f.cache.put(key, m)
	}
	return m, 0, nil
}

// forward sends q to each upstream in turn until one answers NOERROR or
// NXDOMAIN, over UDP and again over TCP when the answer is truncated. Each
// upstream gets Timeout.
func (f *Filter) forward(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if len(f.o.Upstreams) == 0 {
		return nil, errors.New("no upstream resolvers")
	}
	var last error
	for _, up := range f.o.Upstreams {
		m, err := f.forwardOne(ctx, q, up)
		if err == nil && (m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError) {
			return m, nil
		}
		if err == nil {
			err = fmt.Errorf("%s answered %s", up, dns.RcodeToString[m.Rcode])
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (f *Filter) forwardOne(ctx context.Context, q *dns.Msg, up string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()
	m, err := exchangeOn(ctx, f.udp, q, up)
	if err == nil && m.Truncated {
		m, err = exchangeOn(ctx, f.tcp, q, up)
	}
	return m, err
}

// exchangeOn is dns.Client.ExchangeContext that also gives up when ctx is
// cancelled (Shutdown), not only at its deadline: miekg/dns turns the
// context into socket deadlines only.
func exchangeOn(ctx context.Context, c *dns.Client, q *dns.Msg, up string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, up)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	m, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return m, err
}

// cache holds upstream answers per (name, type), shared by all sandboxes:
// it only saves upstream round trips. Decisions, rebinding checks and pins
// are made per sandbox on every answer, cached or not.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[cacheKey]cacheEntry
	now     func() time.Time
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, entries: make(map[cacheKey]cacheEntry), now: time.Now}
}

func (c *cache) get(k cacheKey) (*dns.Msg, uint32, bool) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		return nil, 0, false
	}
	return e.msg, uint32(now.Sub(e.stored) / time.Second), true
}

// put caches m for its smallest TTL (answer records, or the SOA of a
// negative answer), capped at maxCacheTTL; a TTL of 0 is not cached. When
// full it drops expired entries, then arbitrary ones.
func (c *cache) put(k cacheKey, m *dns.Msg) {
	ttl := maxCacheTTL
	rrs := m.Answer
	if len(rrs) == 0 {
		rrs = m.Ns
	}
	if len(rrs) == 0 {
		return
	}
	for _, rr := range rrs {
		t := time.Duration(rr.Header().Ttl) * time.Second
		if soa, ok := rr.(*dns.SOA); ok {
			t = min(t, time.Duration(soa.Minttl)*time.Second)
		}
		ttl = min(ttl, t)
	}
	if ttl <= 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k2, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k2)
			}
		}
		for k2 := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k2)
		}
	}
	c.entries[k] = cacheEntry{msg: m, stored: now, expires: now.Add(ttl)}
}

// UpstreamsFromResolvConf reads the nameserver lines of a resolv.conf
// (normally /etc/resolv.conf) as "IP:53" upstreams, for msbd's default
// --dns-upstream. A loopback resolver (systemd-resolved's 127.0.0.53) is
// kept: the filter runs in msbd's network namespace, where it answers.
func UpstreamsFromResolvConf(path string) ([]string, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var ups []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue // not an address; resolv(5) ignores it too
		}
		ups = append(ups, netip.AddrPortFrom(a.Unmap(), 53).String())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("%s: no nameserver lines; give msbd --dns-upstream IP:53", path)
	}
	return ups, nil
}

// limitListener bounds open TCP connections, per source address and in
// all: a connection past a bound is closed at once, so one sandbox holding
// connections open cannot take DNS over TCP from the others.
type limitListener struct {
	net.Listener
	mu    sync.Mutex
	per   map[netip.Addr]int
	total int
}

func newLimitListener(l net.Listener) *limitListener {
	return &limitListener{Listener: l, per: make(map[netip.Addr]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrOf(c.RemoteAddr())
		l.mu.Lock()
		ok := l.per[src] < maxTCPConnsPerSource && l.total < maxTCPConns
		if ok {
			l.per[src]++
			l.total++
		}
		l.mu.Unlock()
		if ok {
			return &limitConn{Conn: c, l: l, src: src}, nil
		}
		c.Close()
	}
}

func (l *limitListener) done(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[src]--; l.per[src] <= 0 {
		delete(l.per, src)
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	src  netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.done(c.src) })
	return c.Conn.Close()
}
