package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Benchmarks measure the proxy against the same traffic sent directly to
// the upstream, interleaved in the same run, and report both and the
// difference (loopback only).

const bigSize = 100 << 20

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func benchClient(addr string, keepAlive bool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}}
}

func benchSetup(b *testing.B) (up netip.AddrPort, proxyAddr string) {
	up = httpUpstream(b)
	f := newFake()
	f.allowName("web.msb.test", up)
	_, proxyAddr = startProxy(b, f, &up, nil)
	return up, proxyAddr
}

func get(b *testing.B, c *http.Client, url string) time.Duration {
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256<<10) // a download client's read size (curl reads up to 100 KiB+)
	for {
		_, err := resp.Body.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	resp.Body.Close()
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// BenchmarkHTTPLatency: median time of a small GET direct and through the
// proxy, on a new connection per request (the whole path: accept, peek,
// decision, upstream dial) and on a kept-alive one (per-request relay).
func BenchmarkHTTPLatency(b *testing.B) {
	up, px := benchSetup(b)
	for _, ka := range []bool{false, true} {
		name := "new-conn"
		if ka {
			name = "keep-alive"
		}
		b.Run(name, func(b *testing.B) {
			direct, proxied := benchClient(up.String(), ka), benchClient(px, ka)
			defer direct.CloseIdleConnections()
			defer proxied.CloseIdleConnections()
			var d, p []time.Duration
			for b.Loop() {
				d = append(d, get(b, direct, "http://web.msb.test/"))
				p = append(p, get(b, proxied, "http://web.msb.test/"))
			}
			md, mp := median(d), median(p)
			b.ReportMetric(float64(md.Microseconds()), "direct-p50-µs")
			b.ReportMetric(float64(mp.Microseconds()), "proxy-p50-µs")
			b.ReportMetric(float64((mp - md).Microseconds()), "added-p50-µs")
		})
	}
}

// BenchmarkDownload100MB: throughput of a 100 MB response direct and
// through the proxy (Content-Length body: spliced between the sockets).
func BenchmarkDownload100MB(b *testing.B) {
	up, px := benchSetup(b)
	direct, proxied := benchClient(up.String(), true), benchClient(px, true)
	defer direct.CloseIdleConnections()
	defer proxied.CloseIdleConnections()
	var d, p time.Duration
	for b.Loop() {
		d += get(b, direct, "http://web.msb.test/big")
		p += get(b, proxied, "http://web.msb.test/big")
	}
	mbs := func(t time.Duration) float64 { return float64(b.N) * bigSize / (1 << 20) / t.Seconds() }
	b.ReportMetric(mbs(d), "direct-MB/s")
	b.ReportMetric(mbs(p), "proxy-MB/s")
	b.ReportMetric(mbs(p)/mbs(d), "ratio")
}
