// Package krun is the libkrun microVM backend of vmdriver: each sandbox is a
// KVM guest with its own kernel (libkrunfw), whose root filesystem is the
// sandbox's assembled rootfs shared over virtio-fs and whose workload is
// msb-agent, reached by msbd over a vsock port that libkrun maps to a unix
// socket in the sandbox directory.
//
// libkrun is loaded with dlopen at run time (Load), as crun does, so msbd
// builds and runs on hosts without it and msbctl never links it. Probe says
// whether this host can boot microVMs (the KVM device opens read-write and
// libkrun loads with every symbol the driver needs) and reports libkrunfw,
// the vCPU limit and optional features.
//
// krun_start_enter takes over its process and never returns, so every VM
// has a runner process of its own: msbd re-executed as a hidden subcommand
// (see RunnerMain), which configures the context and becomes the VMM. Each
// runner runs as a host uid and gid of its own (the sandbox's slot of the
// --uid-base/--uid-size span, shared with the container driver), in a root
// of its own that holds only what the VMM opens (vmroot.go), and asks
// libkrun to impersonate the guest's inet sockets only, never its unix
// sockets.
package krun
