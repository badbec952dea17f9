// Package apiserver serves the msbd HTTP API: Kubernetes-style resource paths
// under /apis/msb.dev/v1alpha1 backed by the store, plus apply, logs and exec.
//
//	GET    /version, /healthz, /info (what msbd found on its host)
//	GET    /apis/msb.dev/v1alpha1/{plural}                              all namespaces (?labelSelector, ?fieldSelector, ?watch)
//	GET    /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}              list or watch
//	POST   /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}              create
//	GET    /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}/{name}       get
//	PUT    /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}/{name}       update spec and metadata
//	PUT    /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}/{name}/status update status
//	DELETE /apis/msb.dev/v1alpha1/namespaces/{ns}/{plural}/{name}       delete
//	POST   /apis/msb.dev/v1alpha1/apply                                 {"items":[...]} (?dryRun=All)
//	GET    /apis/msb.dev/v1alpha1/namespaces/{ns}/sandboxes/{name}/log  (?follow=true)
//	GET    /apis/msb.dev/v1alpha1/namespaces/{ns}/sandboxes/{name}/networklog  (?follow=true): NDJSON v1alpha1.NetworkDecision
//	POST   /apis/msb.dev/v1alpha1/namespaces/{ns}/sandboxes/{name}/exec?command=...  Upgrade: msb-exec (see v1alpha1.ExecProtocol)
//	POST   /apis/msb.dev/v1alpha1/namespaces/{ns}/sandboxes/{name}/cp?direction=from|to&path=P  Upgrade: msb-exec, a tar stream (tarcopy)
//	GET    /apis/msb.dev/v1alpha1/images                                images held, with in-use counts
//	POST   /apis/msb.dev/v1alpha1/images/pull                           {"ref","policy"}: NDJSON progress, then image or error
//	DELETE /apis/msb.dev/v1alpha1/images?ref=REF                        forget an image no Sandbox uses
//	POST   /apis/msb.dev/v1alpha1/images/prune                          remove blobs and layers nothing uses
//
// Every object that leaves the server goes through v1alpha1.Redact: Secret
// values are write-only. Request and response bodies are never logged.
package apiserver

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store"
)

// Store is what the API needs from the store (implemented by *store.Store).
type Store interface {
	Get(kind, namespace, name string, into v1alpha1.Object) error
	List(kind, namespace string) ([]v1alpha1.Object, int64, error)
	Create(obj v1alpha1.Object) error
	Update(obj v1alpha1.Object) error
	UpdateStatus(obj v1alpha1.Object) error
	Delete(kind, namespace, name string) error
	Apply(objs []v1alpha1.Object, dryRun bool) ([]store.ApplyResult, error)
	Watch(ctx context.Context, fromRevision int64) (<-chan store.WatchEvent, error)
	Events(namespace string, ref *v1alpha1.ObjectReference) ([]v1alpha1.Event, error)
	Revision() int64
}

var _ Store = (*store.Store)(nil)

// Runtime is what the API needs from the running system; msbd implements it.
type Runtime interface {
	// AgentSocket returns the host path of the sandbox's agent unix socket, or an
	// error saying why there is none (e.g. the sandbox is not running).
	AgentSocket(sb *v1alpha1.Sandbox) (string, error)
	// LogDir returns the host directory holding the sandbox's log and log.1.
	LogDir(sb *v1alpha1.Sandbox) (string, error)
}

// Config configures the API handler.
type Config struct {
	Store   Store
	Runtime Runtime
	Version v1alpha1.VersionInfo
	Logger  *slog.Logger
	// Images serves the image routes; without it they answer 503.
	Images ImageService
	// HostInfo answers GET /info (what msbd found on its host); nil
	// answers with the version alone.
	HostInfo func() v1alpha1.HostInfo
}

// prefix is the root of every resource path.
const prefix = "/apis/" + v1alpha1.APIVersion

// maxBodyBytes bounds request bodies (an apply of many manifests fits easily).
const maxBodyBytes = 32 << 20

type server struct {
	store   Store
	rt      Runtime
	version v1alpha1.VersionInfo
	log     *slog.Logger
	images  ImageService
	agents  agentPool
	info    func() v1alpha1.HostInfo
}

// New returns the API handler.
func New(cfg Config) http.Handler {
	s := &server{store: cfg.Store, rt: cfg.Runtime, version: cfg.Version, log: cfg.Logger,
		images: cfg.Images, info: cfg.HostInfo}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /version", s.handle(s.getVersion))
	mux.Handle("GET /healthz", s.handle(s.healthz))
	mux.Handle("GET /info", s.handle(s.getInfo))
	mux.Handle("POST "+prefix+"/apply", s.handle(s.apply))
	mux.Handle("GET "+prefix+"/images", s.handle(s.listImages))
	mux.Handle("DELETE "+prefix+"/images", s.handle(s.removeImage))
	mux.Handle("POST "+prefix+"/images/pull", s.handle(s.pullImage))
	mux.Handle("POST "+prefix+"/images/prune", s.handle(s.pruneImages))
	mux.Handle("GET "+prefix+"/{plural}", s.handle(s.list))
	mux.Handle("GET "+prefix+"/namespaces/{ns}/{plural}", s.handle(s.list))
	mux.Handle("POST "+prefix+"/namespaces/{ns}/{plural}", s.handle(s.create))
	mux.Handle("GET "+prefix+"/namespaces/{ns}/{plural}/{name}", s.handle(s.get))
	mux.Handle("PUT "+prefix+"/namespaces/{ns}/{plural}/{name}", s.handle(s.update))
	mux.Handle("DELETE "+prefix+"/namespaces/{ns}/{plural}/{name}", s.handle(s.delete))
	mux.Handle("PUT "+prefix+"/namespaces/{ns}/{plural}/{name}/status", s.handle(s.updateStatus))
	mux.Handle("GET "+prefix+"/namespaces/{ns}/sandboxes/{name}/log", s.handle(s.logs))
	mux.Handle("GET "+prefix+"/namespaces/{ns}/sandboxes/{name}/networklog", s.handle(s.networkLog))
	mux.Handle("POST "+prefix+"/namespaces/{ns}/sandboxes/{name}/exec", s.handle(s.exec))
	mux.Handle("POST "+prefix+"/namespaces/{ns}/sandboxes/{name}/cp", s.handle(s.copy))
	mux.Handle("GET "+prefix+"/namespaces/{ns}/sandboxes/{name}/stats", s.handle(s.stats))
	mux.Handle("POST "+prefix+"/namespaces/{ns}/sandboxes/{name}/portforward", s.handle(s.portForward))
	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &apiError{code: http.StatusNotFound, reason: "NotFound",
			msg: "no such API path: " + r.Method + " " + r.URL.Path}
	}))
	return s.logRequests(mux)
}

// handle adapts a handler that returns an error: the error becomes a Status
// response unless the handler already started its response (a stream), in which
// case it is only logged.
func (s *server) handle(fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil {
			return
		}
		ae := asAPIError(err)
		if ae.code >= 500 {
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		if rec, ok := w.(*recorder); ok && rec.status != 0 {
			s.log.Debug("error after the response started", "method", r.Method, "path", r.URL.Path, "err", err)
			return
		}
		writeJSON(w, ae.code, ae.status())
	})
}

func (s *server) getInfo(w http.ResponseWriter, r *http.Request) error {
	info := v1alpha1.HostInfo{Version: s.version}
	if s.info != nil {
		info = s.info()
		info.Version = s.version
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *server) getVersion(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.version)
	return nil
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("ok\n"))
	return err
}

// recorder remembers the status code for the request log.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logRequests logs every request at debug level: method, path, status and
// duration, never bodies.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		s.log.Debug("api request", "method", r.Method, "path", r.URL.Path,
			"status", status, "duration", time.Since(start))
	})
}
