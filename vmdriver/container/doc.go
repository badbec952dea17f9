// Package container is the runc backend of vmdriver: each sandbox is a runc
// container in its own user, pid, mount, network, ipc, uts and cgroup namespaces,
// with a seccomp filter, a minimal capability set and cgroup limits. It is the
// fallback on hosts without KVM.
//
// Everything lives under Options.StateDir, so two msbd with different state
// directories never see each other's sandboxes:
//
//	StateDir/
//	├── runc/                    runc --root: runc's own state, one dir per container
//	└── sandboxes/<id>/
//	    ├── spec.json            the vmdriver.Spec, so Start after an msbd restart can rebuild
//	    ├── upper/  work/        overlay writable layer (kept until Delete(purge=true))
//	    ├── rootfs/              overlay mount point: Spec.Layers + upper, the bundle root
//	    ├── agent/               bind-mounted read-write at /.msb: config.json, agent.sock, log, exit-code
//	    │   └── msb-agent        empty placeholder; Spec.AgentPath is bind-mounted over it read-only
//	    ├── files/<n>            Spec.Files[n], host root's, bind-mounted read-only at its path
//	    ├── sys/                 with Spec.NetNSPath: that namespace's sysfs, bound at /sys
//	    ├── pid                  the init's pid, written by runc
//	    ├── runc.log             runc's JSON log (errors of the last runc call)
//	    └── bundle/config.json   the OCI runtime spec
//
// Networking: without Spec.NetNSPath runc makes the sandbox a network
// namespace holding only loopback, which the driver sets up. With it, runc
// joins that namespace by path; its creator (the network policy layer) owns
// it and its setup, so the driver neither brings lo up there nor removes it.
// Spec.Ports are not published by this driver: forwarding host ports into
// the namespace is the network policy layer's job, and the driver accepts
// and ignores them.
//
// Waiting: a sandbox's run is the life of its init (the agent). Wait holds
// a pidfd on it, which works for sandboxes this process did not start.
//
// Each sandbox has a host id range of its own (idalloc.go) and a user
// namespace msbd makes, owned by the first uid of that range (userns.go),
// which runc joins. The overlay is mounted from the host (initial user
// namespace) before runc starts; image layers, owned by the shared range,
// are idmapped to the sandbox's (idmapped.go), and upper/ is owned by the
// sandbox's root, so it writes anywhere the image allows.
//
// No host user but root and the sandbox's root may reach a sandbox's
// files: sandboxes/<id>/ is root:<its gid> 0710 (search only, for runc,
// which mounts the rootfs from inside the user namespace), runc/ is 0700,
// and the image layers live in the image store's 0700 directories (see
// perms.go). The id span itself must belong to no host user or group: see
// CheckIDRange.
//
// Files in agent/ are written by the sandbox, so the host never follows a
// symlink there: it reads and writes them through an os.Root and refuses
// anything that is not a regular file.
package container
