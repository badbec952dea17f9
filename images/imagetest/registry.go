package imagetest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is go-containerregistry's in-memory OCI registry (pkg/registry) served over
// plain HTTP on loopback for one test. It is a real registry, so pulls go through the
// same client code as against any other; tests use it instead of a remote one because
// the test machines have no registry and must send no traffic off the host.
//
// It counts the requests it serves, keyed "METHOD /path", so a test can check what a
// pull fetched (each blob once, nothing from a cache), and a test may intercept
// requests to answer them itself (errors, authentication, slowness).
type Registry struct {
	// Host is "127.0.0.1:port" (or "[::1]:port"): the registry part of a reference.
	Host string

	// transport reaches the registry from the test (nil: the default).
	transport http.RoundTripper

	mu        sync.Mutex
	counts    map[string]int
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

// NewRegistry starts a registry on loopback, with the registry's own log silenced,
// and closes it when the test finishes. It fails the test if the server is not on a
// loopback address.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	return NewRegistryOn(t, nil, nil)
}

// NewRegistryOn is NewRegistry serving on ln (a loopback listener the caller
// opened, e.g. inside a network namespace of the test's), pushed to through
// transport; nil for either takes the default.
func NewRegistryOn(t testing.TB, ln net.Listener, transport http.RoundTripper) *Registry {
	t.Helper()
	r := &Registry{counts: map[string]int{}, transport: transport}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.counts[req.Method+" "+req.URL.Path]++
		icpt := r.intercept
		r.mu.Unlock()
		if icpt != nil && icpt(w, req) {
			return
		}
		reg.ServeHTTP(w, req)
	}))
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	host, _, err := net.SplitHostPort(r.Host)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Fatalf("imagetest: the test registry is not on loopback: %s", r.Host)
	}
	return r
}

// Push writes img to the registry as repoTag ("team/app:v1") and returns the
// reference "Host/repoTag" and the image's manifest digest. The request counts are
// reset afterwards, so they describe only what happens after the push.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) (ref, digest string) {
	t.Helper()
	tag := r.parse(t, repoTag)
	if err := remote.Write(tag, img, r.remoteOptions()...); err != nil {
		t.Fatalf("imagetest: push %s: %v", tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("imagetest: digest of %s: %v", tag, err)
	}
	r.Reset()
	return r.Host + "/" + repoTag, d.String()
}

// PushIndex is Push for an image index (a multi-platform image).
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) (ref, digest string) {
	t.Helper()
	tag := r.parse(t, repoTag)
	if err := remote.WriteIndex(tag, idx, r.remoteOptions()...); err != nil {
		t.Fatalf("imagetest: push index %s: %v", tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("imagetest: digest of %s: %v", tag, err)
	}
	r.Reset()
	return r.Host + "/" + repoTag, d.String()
}

func (r *Registry) parse(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatalf("imagetest: reference %q: %v", repoTag, err)
	}
	return ref
}

// Intercept makes f see every later request first (after it is counted); if f
// returns true it has answered the request and the registry does not. A nil f
// removes the interceptor. f may sleep to make the registry slow; it runs on the
// server's goroutine for that request.
func (r *Registry) Intercept(f func(w http.ResponseWriter, req *http.Request) bool) {
	r.mu.Lock()
	r.intercept = f
	r.mu.Unlock()
}

// Reset forgets the requests counted so far.
func (r *Registry) Reset() {
	r.mu.Lock()
	r.counts = map[string]int{}
	r.mu.Unlock()
}

// Requests is the number of requests since the last reset whose "METHOD /path"
// contains every one of parts: Requests() and Requests("") count all of them,
// Requests("GET ", "/blobs/") the blob downloads.
func (r *Registry) Requests(parts ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
next:
	for k, v := range r.counts {
		for _, p := range parts {
			if !strings.Contains(k, p) {
				continue next
			}
		}
		n += v
	}
	return n
}

// Counts returns a copy of the request counts since the last reset, keyed
// "METHOD /path".
func (r *Registry) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.counts))
	for k, v := range r.counts {
		m[k] = v
	}
	return m
}

// Summary lists the requests since the last reset, one "METHOD /path ×n" a line,
// sorted, for failure messages.
func (r *Registry) Summary() string {
	var lines []string
	for k, v := range r.Counts() {
		lines = append(lines, fmt.Sprintf("%s ×%d", k, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (r *Registry) remoteOptions() []remote.Option {
	if r.transport == nil {
		return nil
	}
	return []remote.Option{remote.WithTransport(r.transport)}
}
