// Command msbd is the msb daemon: it serves the API on a unix socket, keeps
// desired state in bbolt and runs the reconcile loop that converges sandboxes
// to it. It runs in the foreground; SIGTERM stops it and leaves sandboxes running.
//
// This file only parses flags and wires the parts together; what they do is
// in their packages. Subcommands are dispatched before flags are parsed, so a
// hidden helper (the microVM runner) can take its own arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/images"
	"msb.dev/msb/reconciler"
	"msb.dev/msb/store"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

// subcommands run instead of the daemon when named as the first argument.
var subcommands = map[string]func(args []string) error{
	"version": func([]string) error { fmt.Printf("msbd %s %s\n", version, runtime.Version()); return nil },
}

func main() {
	if len(os.Args) > 1 {
		if sub, ok := subcommands[os.Args[1]]; ok {
			if err := sub(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "msbd %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	var o options
	fs := flag.NewFlagSet("msbd", flag.ContinueOnError)
	o.register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		_ = subcommands["version"](nil)
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
	defDisk := v1alpha1.Quantity(o.defaultDisk)
	if err := defDisk.Validate(); err != nil {
		return fmt.Errorf("--default-disk: %w", err)
	}
	mcpCfg, err := o.checkMCP()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("msbd must run as root (it creates namespaces, mounts and cgroups)")
	}
	if o.uidBase == 0 || o.uidSize == 0 || uint64(o.uidBase)+uint64(o.uidSize) > math.MaxUint32 {
		return fmt.Errorf("--uid-base %d --uid-size %d: want a non-empty range below 2^32-1", o.uidBase, o.uidSize)
	}
	// A host user who holds these ids (an account, or a subuid range used by
	// podman or newuidmap) could act as every sandbox's root.
	uid, size := uint32(o.uidBase), uint32(o.uidSize)
	if err := container.CheckIDRange(uid, uid, size); err != nil {
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
	imgs, err := images.New(filepath.Join(stateDir, "images"), images.WithIDMap(uid, uid, min(size, container.SlotSize)),
		images.WithInsecureRegistries(o.insecure), images.WithMaxUnpackedSize(o.maxImageSize))
	if err != nil {
		return err
	}
	ctr, err := container.New(container.Options{StateDir: stateDir, HostUID: uid, HostGID: uid, IDMapSize: size, PooledDiskBytes: defDisk.Value()})
	if err != nil {
		return err
	}
	facts := &hostFacts{host: vmdriver.Probe(), krun: krun.Probe(o.krunLib, o.kvmDevice)}
	facts.krun.RequireAccessSpan(uid, uid, size)
	log.Info("host probe", "microvm", facts.krun.String())
	facts.defaultDisk = o.defaultDisk
	if facts.sharedIDs = ctr.SharedIDReason(); facts.sharedIDs != "" {
		log.Warn("sandboxes share one host id range", "reason", facts.sharedIDs)
	}
	all := []vmdriver.Driver{ctr}
	vm, microVMWhy := microVMDriver(o, stateDir, uid, size, ctr.IDRanges(), facts.krun, log)
	if vm != nil {
		all = append(all, vm)
	}
	drivers := vmdriver.NewSet(microVMWhy, all...)
	auto, _ := drivers.Choose(vmdriver.IsolationAuto)
	agentPath, agentErr := agent.Locate(o.agent)
	if agentErr != nil {
		log.Error("sandboxes cannot start until this is fixed", "err", agentErr)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	events := reconciler.NewRecorder(st, log)
	var network *reconciler.NetworkStack // nil with --network=false: loopback-only sandboxes
	if o.network {
		if network, err = reconciler.StartNetwork(reconciler.NetworkOptions{StateDir: stateDir, Pool: o.sandboxCIDR, DNSPort: o.dnsPort,
			ProxyPort: o.proxyPort, Upstreams: o.dnsUpstreams, UpstreamCA: o.upstreamCA, Events: events, Log: log}); err != nil {
			return fmt.Errorf("sandbox networking: %w", err)
		}
		defer network.Close()
	}
	orphans := reconciler.NewOrphanCollector(stateDir, st, drivers, log)
	orphans.Network = network.Attachments()
	orphans.Events = st
	limits := &hostLimits{drivers: drivers, network: network.Attachments()}
	if o.network {
		limits.pool, _ = netip.ParsePrefix(o.sandboxCIDR)
	}
	limits.log(log)
	queue := reconciler.NewQueue(50*time.Millisecond, 30*time.Second)
	sbr := &reconciler.SandboxReconciler{
		Store: st, Images: imgs, Drivers: drivers, Events: events, Network: network.Seam(), Secrets: network.SecretInjection(),
		AgentPath: agentPath, AgentErr: agentErr,
		RestartBackoff: o.restartBackoff, RestartBackoffMax: o.restartBackoffMax, StopGrace: o.stopGrace,
		DefaultMemoryBytes: defMem.Value(), DefaultPIDs: o.defaultPIDs, DefaultDiskBytes: defDisk.Value(),
		Requeue: queue.Add, BeforeCreate: orphans.BeforeCreate, Log: log, ProbeAgent: probeAgent,
	}
	ctrl := &reconciler.Controller{Name: "sandbox", Queue: queue, Reconciler: sbr, Workers: o.workers, Log: log, OnPanic: events.PanicRecorder(st)}
	inNamespace := reconciler.SandboxesInNamespace(st)
	source := &reconciler.Source{
		Store: st, Kind: v1alpha1.KindSandbox, Queue: queue, Resync: o.resync, Log: log,
		Related:  map[string]func(v1alpha1.Object) []string{v1alpha1.KindSecret: inNamespace, v1alpha1.KindNetworkPolicy: inNamespace},
		OnResync: orphans.Collect,
	}
	npQueue := reconciler.NewQueue(50*time.Millisecond, 30*time.Second)
	npCtrl := &reconciler.Controller{Name: "networkpolicy", Queue: npQueue, Reconciler: &reconciler.NetworkPolicyReconciler{Store: st}, Workers: 1, Log: log, OnPanic: events.PanicRecorder(st)}
	npSource := &reconciler.Source{Store: st, Kind: v1alpha1.KindNetworkPolicy, Queue: npQueue, Resync: o.resync, Log: log,
		Related: map[string]func(v1alpha1.Object) []string{v1alpha1.KindSandbox: reconciler.PoliciesInNamespace(st)}}

	ln, err := apiserver.Listen(o.socket)
	if err != nil {
		return err
	}
	srv := &http.Server{BaseContext: func(net.Listener) context.Context { return ctx }, Handler: apiserver.New(apiserver.Config{
		Store:   st,
		Runtime: reconciler.Runtime{Drivers: drivers, Engine: network.DecisionLog(), Requeue: queue.Add, SuspectAgent: sbr.SuspectAgent},
		Images:  imgs,
		Version: v1alpha1.VersionInfo{Version: version, GoVersion: runtime.Version(), Driver: auto.Name(), Isolation: auto.Isolation()},
		Logger:  log,
		HostInfo: func() v1alpha1.HostInfo {
			h := facts.info(drivers)
			orphans.AddInfo(&h)
			limits.addInfo(&h)
			return h
		},
	})}

	if mcpCfg != nil {
		stopMCP, err := serveMCP(ctx, mcpCfg, o.socket, o.mcpTTL, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopMCP()
	}
	servePprof(ctx, o.pprofSocket, log)
	// Before serving: once msbd answers, orphans are gone (or held).
	if err := orphans.CollectOnce(ctx); err != nil {
		log.Warn("collecting orphaned sandboxes", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		npDone := make(chan struct{})
		go func() { defer close(npDone); npCtrl.Run(ctx) }()
		ctrl.Run(ctx)
		<-npDone
		sbr.Close()
		events.Close()
	}()
	go source.Run(ctx)
	go npSource.Run(ctx)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if err := serveManifestsDirs(ctx, o.manifestsDirs, o.socket, st, o.resync, log); err != nil {
		log.Warn("manifests dirs", "err", err)
	}
	log.Info("msbd started", "version", version, "socket", o.socket, "stateDir", stateDir, "driver", auto.Name(), "isolation", auto.Isolation())

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
