package proxy

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"msb.dev/msb/secretinject"
)

// BenchmarkInterceptLatency: median time of a small HTTPS GET through the
// proxy, intercepted with a bearer token substituted, against a
// passthrough GET to the same upstream (spliced TLS, the upstream's own
// certificate), interleaved in the same run. new-conn: a connection per
// request (TCP, TLS and, when intercepted, the upstream TLS too);
// keep-alive: one connection, the per-request cost. The leaf is warm
// (cached after the first request).
func BenchmarkInterceptLatency(b *testing.B) {
	e := newSecretEnv(b, nil)
	e.f.allowName("pass.msb.test", e.up.ap)
	for _, ka := range []bool{false, true} {
		for _, h2 := range []bool{false, true} {
			name := map[bool]string{false: "new-conn", true: "keep-alive"}[ka] + map[bool]string{false: "/h1", true: "/h2"}[h2]
			b.Run(name, func(b *testing.B) {
				ic, pc := e.clientWith(h2, ka, e.pool), e.clientWith(h2, ka, e.upPool)
				defer ic.CloseIdleConnections()
				defer pc.CloseIdleConnections()
				benchGet(b, ic, "https://api.msb.test/", phKey) // warms the leaf
				var in, pass []time.Duration
				for b.Loop() {
					in = append(in, benchGet(b, ic, "https://api.msb.test/", phKey))
					pass = append(pass, benchGet(b, pc, "https://pass.msb.test/", ""))
				}
				mi, mp := median(in), median(pass)
				b.ReportMetric(float64(mp.Microseconds()), "passthrough-p50-µs")
				b.ReportMetric(float64(mi.Microseconds()), "intercept-p50-µs")
				b.ReportMetric(float64((mi - mp).Microseconds()), "added-p50-µs")
			})
		}
	}
}

// BenchmarkInterceptColdLeaf: the first request to a host whose leaf is
// not cached yet (a fresh name each time: the leaf is minted and signed
// on the handshake), against a warm-leaf request on a new connection.
func BenchmarkInterceptColdLeaf(b *testing.B) {
	e := newSecretEnv(b, nil)
	set, err := secretinject.NewSet([]secretinject.Binding{{Placeholder: phKey, Value: []byte(valKey),
		Secret: "default/llm", Key: "apiKey", AllowedHosts: []string{"*.cold.msb.test", "api.msb.test"}}})
	if err != nil {
		b.Fatal(err)
	}
	e.set.Store(set)
	c := e.clientWith(false, false, e.pool)
	benchGet(b, c, "https://api.msb.test/", phKey)
	var cold, warm []time.Duration
	i := 0
	for b.Loop() {
		i++
		host := fmt.Sprintf("n%d.cold.msb.test", i)
		e.f.allowName(host, e.up.ap)
		cold = append(cold, benchGet(b, c, "https://"+host+"/", phKey))
		warm = append(warm, benchGet(b, c, "https://api.msb.test/", phKey))
	}
	mc, mw := median(cold), median(warm)
	b.ReportMetric(float64(mw.Microseconds()), "warm-p50-µs")
	b.ReportMetric(float64(mc.Microseconds()), "cold-p50-µs")
	b.ReportMetric(float64((mc - mw).Microseconds()), "cold-added-p50-µs")
}

func benchGet(b *testing.B, c *http.Client, url, token string) time.Duration {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != 200 {
		b.Fatalf("%s: status %d", url, resp.StatusCode)
	}
	return d
}
