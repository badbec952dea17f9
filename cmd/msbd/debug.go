package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"syscall"
)

// debugFlags defines the profiling flag. Profiles say where msbd's memory
// and CPU go with many sandboxes (hack/bench/density.sh); they are off by
// default and served on a root-only unix socket, never on the API socket.
func (o *options) debugFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.pprofSocket, "pprof-socket", "", "serve Go's net/http/pprof profiles on this unix socket (root only; for profiling, off by default)")
}

// servePprof serves the pprof handlers on path (none when empty) until ctx
// ends. A socket it cannot listen on is logged: profiling is not worth
// refusing to run sandboxes.
func servePprof(ctx context.Context, path string, log *slog.Logger) {
	if path == "" {
		return
	}
	_ = os.Remove(path)
	// Created 0600 from the start: no window where others could connect.
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		log.Warn("--pprof-socket: not serving profiles", "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(path)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Warn("pprof socket", "err", err)
		}
	}()
	log.Info("serving pprof", "socket", path)
}
