// Command msbd is the msb daemon: it serves the API on a unix socket, keeps
// desired state in bbolt and runs the reconcile loop that converges sandboxes
// to it. It runs in the foreground; SIGTERM stops it and leaves sandboxes running.
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/images"
	"msb.dev/msb/reconciler"
	"msb.dev/msb/store"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/container"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

type options struct {
	stateDir          string
	socket            string
	agent             string
	logLevel          string
	workers           int
	restartBackoff    time.Duration
	restartBackoffMax time.Duration
	stopGrace         time.Duration
	resync            time.Duration
	uidBase, uidSize  uint
	insecure          stringList
	maxImageSize      int64
	defaultMemory     string
	defaultPIDs       int64
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var o options
	fs := flag.NewFlagSet("msbd", flag.ContinueOnError)
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/msb", "directory for the database, images and sandboxes")
	fs.StringVar(&o.socket, "socket", client.DefaultSocket, "API unix socket path")
	fs.StringVar(&o.agent, "agent", "", "path of the static msb-agent binary (default: msb-agent beside msbd)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&o.workers, "workers", 4, "reconcile workers")
	fs.DurationVar(&o.restartBackoff, "restart-backoff", time.Second, "first delay before restarting a finished sandbox (doubles per restart)")
	fs.DurationVar(&o.restartBackoffMax, "restart-backoff-max", 5*time.Minute, "longest restart delay")
	fs.DurationVar(&o.stopGrace, "stop-grace", 10*time.Second, "time between SIGTERM and SIGKILL when stopping a sandbox")
	fs.DurationVar(&o.resync, "resync", 30*time.Second, "how often every sandbox is reconciled even without changes")
	fs.UintVar(&o.uidBase, "uid-base", container.DefaultHostID, "first host uid/gid of the range sandboxes' users map to; no host account or /etc/subuid, /etc/subgid range may overlap it")
	fs.UintVar(&o.uidSize, "uid-size", container.DefaultIDMapSize, "size of that range")
	fs.Var(&o.insecure, "insecure-registry", "HOST:PORT of a registry reached over plain HTTP (repeatable; loopback registries always may)")
	fs.Int64Var(&o.maxImageSize, "max-image-size", images.DefaultMaxUnpackedSize, "largest unpacked image size in bytes; larger images are refused")
	fs.StringVar(&o.defaultMemory, "default-memory", "2Gi", "memory limit of sandboxes whose spec sets none (0: unlimited)")
	fs.Int64Var(&o.defaultPIDs, "default-pids", 4096, "process limit of sandboxes whose spec sets none (0: unlimited)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Printf("msbd %s %s\n", version, runtime.Version())
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "msbd:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	defMem := v1alpha1.Quantity(o.defaultMemory)
	if err := defMem.Validate(); err != nil {
		return fmt.Errorf("--default-memory: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("msbd must run as root (it creates namespaces, mounts and cgroups)")
	}
	if o.uidBase == 0 || o.uidSize == 0 || uint64(o.uidBase)+uint64(o.uidSize) > math.MaxUint32 {
		return fmt.Errorf("--uid-base %d --uid-size %d: want a non-empty range below 2^32-1", o.uidBase, o.uidSize)
	}
	// A host user who holds these ids (an account, or a subuid range used by
	// podman or newuidmap) could act as every sandbox's root.
	if err := container.CheckIDRange(uint32(o.uidBase), uint32(o.uidBase), uint32(o.uidSize)); err != nil {
		return err
	}
	stateDir, err := filepath.Abs(o.stateDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}

	st, err := store.Open(filepath.Join(stateDir, "msb.db"), store.WithSecretKeyFile(filepath.Join(stateDir, "keys", "secrets.key")))
	if err != nil {
		return err
	}
	defer st.Close()

	imgs, err := images.New(filepath.Join(stateDir, "images"), images.WithIDMap(uint32(o.uidBase), uint32(o.uidBase), uint32(o.uidSize)),
		images.WithInsecureRegistries(o.insecure), images.WithMaxUnpackedSize(o.maxImageSize))
	if err != nil {
		return err
	}
	drv, err := container.New(container.Options{StateDir: stateDir, HostUID: uint32(o.uidBase), HostGID: uint32(o.uidBase), IDMapSize: uint32(o.uidSize)})
	if err != nil {
		return err
	}
	agentPath, agentErr := findAgent(o.agent)
	if agentErr != nil {
		log.Error("sandboxes cannot start until this is fixed", "err", agentErr)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	orphans := newOrphanCollector(stateDir, st, drv, log)
	queue := reconciler.NewQueue(50*time.Millisecond, 30*time.Second)
	sbr := &reconciler.SandboxReconciler{
		Store:              st,
		NotFound:           func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Conflict:           func(err error) bool { return errors.Is(err, store.ErrConflict) },
		Images:             imgs,
		Driver:             drv,
		AgentPath:          agentPath,
		AgentErr:           agentErr,
		RestartBackoff:     o.restartBackoff,
		RestartBackoffMax:  o.restartBackoffMax,
		StopGrace:          o.stopGrace,
		DefaultMemoryBytes: defMem.Value(),
		DefaultPIDs:        o.defaultPIDs,
		Requeue:            queue.Add,
		BeforeCreate:       orphans.advance,
		Log:                log,
	}
	ctrl := &reconciler.Controller{Name: "sandbox", Queue: queue, Reconciler: sbr, Workers: o.workers, Log: log, OnPanic: sbr.RecordPanic}

	ln, err := apiserver.Listen(o.socket)
	if err != nil {
		return err
	}
	srv := &http.Server{BaseContext: func(net.Listener) context.Context { return ctx }, Handler: apiserver.New(apiserver.Config{
		Store:   st,
		Runtime: runtimeInfo{drv},
		Images:  imgs,
		Version: client.VersionInfo{Version: version, GoVersion: runtime.Version(), Driver: drv.Name(), Isolation: drv.Isolation()},
		Logger:  log,
	})}

	// Before serving: once msbd answers, orphans are gone (or held).
	if err := orphans.collectOnce(ctx); err != nil {
		log.Warn("collecting orphaned sandboxes", "err", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); ctrl.Run(ctx); sbr.Close() }()
	go feed(ctx, st, queue, o.resync, orphans, log)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("msbd started", "version", version, "socket", o.socket, "stateDir", stateDir, "driver", drv.Name(), "isolation", drv.Isolation())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		cancel()
		<-done
		return fmt.Errorf("serving API: %w", err)
	}
	log.Info("msbd stopping; sandboxes keep running")
	shutdownCtx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer c2()
	_ = srv.Shutdown(shutdownCtx)
	<-done
	_ = os.Remove(o.socket)
	return nil
}

// feed keeps the queue fed: every Sandbox on start (level-triggered: this is
// how running sandboxes are adopted), every change from the store's watch, and
// everything again at each resync, when runtime state no Sandbox owns any
// more is also removed.
func feed(ctx context.Context, st *store.Store, q *reconciler.Queue, resync time.Duration, orphans *orphanCollector, log *slog.Logger) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for ctx.Err() == nil {
		objs, rev, err := st.List(v1alpha1.KindSandbox, "")
		if err != nil {
			log.Error("listing sandboxes", "err", err)
			time.Sleep(time.Second)
			continue
		}
		for _, o := range objs {
			q.Add(v1alpha1.KeyOf(o))
		}
		watchFrom(ctx, st, q, rev, tick.C, log)
		if ctx.Err() == nil {
			orphans.collect(ctx)
		}
	}
}

// watchFrom feeds changes after rev to the queue until the stream ends or
// the next resync; its watch is cancelled on return so none is left behind.
func watchFrom(ctx context.Context, st *store.Store, q *reconciler.Queue, rev int64, resync <-chan time.Time, log *slog.Logger) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := st.Watch(wctx, rev)
	if err != nil {
		log.Warn("watching store; re-listing", "err", err)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync:
			return // re-list: a resync
		case ev, ok := <-ch:
			if !ok {
				return
			}
			switch ev.Kind {
			case v1alpha1.KindSandbox:
				q.Add(v1alpha1.KeyOf(ev.Object))
			case v1alpha1.KindSecret:
				// Sandboxes referencing a Secret wait for it; look again.
				enqueueNamespace(st, q, ev.Object.GetMetadata().Namespace)
			}
		}
	}
}

func enqueueNamespace(st *store.Store, q *reconciler.Queue, ns string) {
	objs, _, err := st.List(v1alpha1.KindSandbox, ns)
	if err != nil {
		return
	}
	for _, o := range objs {
		q.Add(v1alpha1.KeyOf(o))
	}
}

// runtimeInfo tells the API server where a sandbox's agent lives.
type runtimeInfo struct{ drv vmdriver.Driver }

func (r runtimeInfo) AgentSocket(sb *v1alpha1.Sandbox) (string, error) {
	if sb.Status.Phase != v1alpha1.PhaseRunning || sb.Status.PID == 0 {
		phase := string(sb.Status.Phase)
		if phase == "" {
			phase = string(v1alpha1.PhasePending)
		}
		return "", fmt.Errorf("sandbox %q is not running (phase %s); wait for it with 'msbctl wait sandbox/%s --for=condition=Ready'", sb.Metadata.Name, phase, sb.Metadata.Name)
	}
	return filepath.Join(r.drv.AgentDir(sb.Metadata.UID), "agent.sock"), nil
}

func (r runtimeInfo) LayersInUse(ctx context.Context) (map[string]bool, error) {
	if lu, ok := r.drv.(apiserver.LayerUser); ok {
		return lu.LayersInUse(ctx)
	}
	return nil, errors.New("the sandbox driver cannot tell which image layers it uses; not pruning")
}

func (r runtimeInfo) LogDir(sb *v1alpha1.Sandbox) (string, error) {
	if sb.Metadata.UID == "" {
		return "", errors.New("sandbox has no uid yet")
	}
	return r.drv.AgentDir(sb.Metadata.UID), nil
}

// findAgent locates msb-agent (the flag, else beside msbd) and checks that it
// is a static executable: it runs inside images that have no libc of ours.
func findAgent(flagPath string) (string, error) {
	p := flagPath
	if p == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = filepath.Join(filepath.Dir(self), "msb-agent")
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	const hint = "build it with: CGO_ENABLED=0 go build -o DIR/msb-agent ./cmd/msb-agent (put it beside msbd or pass --agent PATH)"
	f, err := elf.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("msb-agent not found at %s; %s", p, hint)
		}
		return "", fmt.Errorf("msb-agent at %s is not an executable: %v; %s", p, err, hint)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("msb-agent at %s is dynamically linked and would not run inside images; %s", p, hint)
		}
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("msb-agent at %s is not executable; %s", p, hint)
	}
	if strings.ContainsAny(p, "\n") {
		return "", fmt.Errorf("msb-agent path %q is not usable", p)
	}
	return p, nil
}
