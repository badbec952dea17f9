package main

import (
	"flag"
	"strings"
	"time"

	"msb.dev/msb/client"
	"msb.dev/msb/images"
	"msb.dev/msb/netpolicy/hostnet"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun"
)

// options are msbd's flags. Each feature keeps its flags together here so
// main.go stays wiring only.
type options struct {
	stateDir, socket, agent, logLevel, defaultMemory, sandboxCIDR string
	defaultDisk                                                   string
	dnsUpstreams                                                  stringList
	upstreamCA                                                    string
	dnsPort, proxyPort                                            uint
	network                                                       bool
	workers                                                       int
	restartBackoff, restartBackoffMax                             time.Duration
	stopGrace, resync                                             time.Duration
	uidBase, uidSize                                              uint
	insecure                                                      stringList
	maxImageSize, defaultPIDs                                     int64
	krunLib, kvmDevice                                            string
	mcpListen, mcpTokenFile                                       string
	mcpAllowRemote                                                bool
	mcpTTL                                                        time.Duration
	mcpAllSandboxes                                               bool
	mcpMaxMemory, mcpMaxCPUs, mcpMaxDisk                          string
	mcpMaxPIDs                                                    int64
	defaultVCPUs                                                  int
	manifestsDirs                                                 stringList
	pprofSocket                                                   string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// register defines every flag on fs, bound to o.
func (o *options) register(fs *flag.FlagSet) {
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
	fs.StringVar(&o.defaultDisk, "default-disk", "10Gi", "disk limit (writable layer and agent directory together) of sandboxes whose spec sets none (0: unlimited)")
	fs.Int64Var(&o.defaultPIDs, "default-pids", 4096, "process limit of sandboxes whose spec sets none (0: unlimited)")
	fs.BoolVar(&o.network, "network", true, "give sandboxes a network that NetworkPolicies open (false: loopback only, no published ports)")
	fs.StringVar(&o.sandboxCIDR, "sandbox-cidr", hostnet.DefaultPool.String(), "private IPv4 pool sandbox addresses come from (a /30 each); must not overlap a route of the host")
	fs.StringVar(&o.upstreamCA, "upstream-ca", "", "PEM file of CAs trusted, beside the system's, for upstreams whose TLS msbd terminates to substitute secrets")
	fs.Var(&o.dnsUpstreams, "dns-upstream", "IP:PORT of a DNS server the sandboxes' DNS filter asks (repeatable; default: the servers of /etc/resolv.conf)")
	// Below 1024: while msbd restarts, no unprivileged process may take the ports sandboxes' traffic goes to.
	fs.UintVar(&o.dnsPort, "dns-port", 1017, "port of the sandboxes' DNS filter in msbd's network namespace (below 1024)")
	fs.UintVar(&o.proxyPort, "proxy-port", 1018, "port of the sandboxes' transparent egress proxy in msbd's network namespace (below 1024)")
	fs.StringVar(&o.krunLib, "krun-lib", "", "libkrun shared library for microVMs (default: the loader's search for "+krun.DefaultLibrary+")")
	fs.StringVar(&o.kvmDevice, "kvm-device", krun.DefaultKVMDevice, "KVM device microVMs run on; it must open read-write")
	fs.StringVar(&o.mcpListen, "mcp-listen", "", "HOST:PORT to serve MCP (streamable HTTP) on for AI agents, e.g. 127.0.0.1:8765; needs --mcp-token-file")
	fs.StringVar(&o.mcpTokenFile, "mcp-token-file", "", "file holding the bearer token MCP clients must send")
	fs.BoolVar(&o.mcpAllowRemote, "mcp-allow-remote", false, "let --mcp-listen use a non-loopback address")
	fs.DurationVar(&o.mcpTTL, "mcp-ttl", 0, "lifetime of sandboxes created over MCP that ask for none (0: until deleted)")
	o.mcpFlags(fs)
	o.debugFlags(fs)
	fs.IntVar(&o.defaultVCPUs, "default-vcpus", 1, "vCPUs of microVMs whose spec sets no cpus")
	fs.Var(&o.manifestsDirs, "manifests-dir", "directory of manifests msbd keeps applied, pruning what is removed from it (repeatable; see README)")
}
