// Package secretinject keeps secret values out of sandboxes: a sandbox sees
// only a placeholder for each secret it references, and msbd's egress proxy
// substitutes the real value on the way out, only towards the hosts and
// only in the parts of a request the Secret allows.
//
// Parts: placeholders and secret references (placeholder.go, refs.go);
// msbd's CA, in-memory leaf certificates and the sandbox trust bundle
// (ca.go, trust.go); per-sandbox substitution sets (rules.go); request
// rewriting (substitute.go); leak detection (scan.go, leak.go).
//
// How the proxy uses it, per sandbox connection:
//
//  1. set := sets.Get(sandboxID). TLS whose SNI set.NeedsIntercept stays
//     passthrough (spliced, the real certificate). DNS: refuse a query when
//     set.LeakInName(qname) != nil. Plain HTTP: never substitute; refuse a
//     request when set.LeakInBytes(head) != nil and relay its body through
//     set.GuardStream(body, host).
//  2. To intercept: only when SNI, the first request's Host and the pinned
//     destination agree on the name (the proxy's existing checks). Dial the
//     original address, handshake upstream with
//     UpstreamConfig(sni, UpstreamRoots(--upstream-ca), nil) before
//     answering the sandbox, then serve the sandbox with ca.ServerConfig(),
//     offering the ALPN the upstream chose (h2 only if the upstream speaks
//     it), and relay with net/http (http.Server / http2.Server on the
//     sandbox side, a Transport pinned to that one upstream connection).
//  3. Per request: set.Rewrite(req, sni). A *Leak (errors.As) or
//     ErrHostMismatch: answer nothing upstream, close the sandbox
//     connection, record SecretLeakBlocked. A *Leak may also come out of
//     RoundTrip while a streamed body is being sent: reset both sides.
//     Fetch the Set per request, not per connection: rotation is live.
package secretinject
