package apiserver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/store"
	"msb.dev/msb/store/storetest"
)

// fakeRuntime points every sandbox at directories the test controls.
type fakeRuntime struct {
	mu        sync.Mutex
	logDir    string
	agentSock string
	// oomKills, when set, answers OOMKills (see exec_guard_test.go).
	oomKills func() (uint64, error)
}

func (r *fakeRuntime) AgentSocket(sb *v1alpha1.Sandbox) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agentSock == "" {
		return "", errors.New("sandbox " + sb.Metadata.Name + " is not running (phase Pending)")
	}
	return r.agentSock, nil
}

func (r *fakeRuntime) LogDir(sb *v1alpha1.Sandbox) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logDir, nil
}

func (r *fakeRuntime) setAgentSock(p string) {
	r.mu.Lock()
	r.agentSock = p
	r.mu.Unlock()
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tapListener records every byte the server writes to any connection,
// including hijacked ones, so tests can grep all responses.
type tapListener struct {
	net.Listener
	out *syncBuffer
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, out: l.out}, nil
}

type tapConn struct {
	net.Conn
	out *syncBuffer
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.out.Write(p)
	return c.Conn.Write(p)
}

func (c *tapConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type env struct {
	dir     string
	socket  string
	store   *store.Store
	rt      *fakeRuntime
	client  *client.Client
	written *syncBuffer // every byte the server sent
	logs    *syncBuffer // the server's log
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "msbapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := storetest.Open(t)
	e := &env{
		dir:     dir,
		socket:  filepath.Join(dir, "run", "msbd.sock"),
		store:   st,
		rt:      &fakeRuntime{logDir: filepath.Join(dir, "logs")},
		written: &syncBuffer{},
		logs:    &syncBuffer{},
	}
	if err := os.MkdirAll(e.rt.logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := apiserver.Listen(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := httptest.NewUnstartedServer(apiserver.New(apiserver.Config{
		Store:   st,
		Runtime: e.rt,
		Version: v1alpha1.VersionInfo{Version: "test", GoVersion: "go", Driver: "fake", Isolation: "none"},
		Logger:  logger,
		HostInfo: func() v1alpha1.HostInfo {
			return v1alpha1.HostInfo{Drivers: []v1alpha1.DriverInfo{{Name: "fake", Isolation: "none", Available: true, Auto: true}}}
		},
	}))
	ts.Listener = &tapListener{Listener: ln, out: e.written}
	ts.Start()
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	e.client = client.New(e.socket)
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sandbox(ns, name string, labels map[string]string) *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:     v1alpha1.SandboxSpec{Image: "busybox:1.36", Command: []string{"sleep", "1000"}},
	}
}

func secret(ns, name, key, value string) *v1alpha1.Secret {
	return &v1alpha1.Secret{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSecret},
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.SecretSpec{
			StringData:   map[string]string{key: value},
			AllowedHosts: []string{"api.example.com"},
			SubstituteIn: []string{v1alpha1.SubstituteHeaders},
		},
	}
}

func names(objs []v1alpha1.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetMetadata().Namespace+"/"+o.GetMetadata().Name)
	}
	return out
}
