// Package images resolves a Sandbox image reference to read-only, content-addressed,
// unpacked layers that the container driver stacks as overlayfs lower directories.
//
// References are registry references ("python:3.12", "ghcr.io/org/tool@sha256:…",
// pulled with go-containerregistry's remote package) or local files (oci:DIR[:TAG],
// oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]). Multi-platform indexes are
// resolved for linux and the host architecture (WithPlatform).
//
// On disk, beneath the directory given to New (normally <state>/images):
//
//	images/
//	├── idmap.json           the id map the layers were unpacked for (a store keeps one)
//	├── refs.json            reference as written → canonical name, digests, diffIDs, size
//	├── blobs/sha256/<hex>   manifests, indexes, configs and compressed layers pulled from
//	│                        registries, each checked against its digest before it is
//	│                        renamed into place; a compressed layer is removed once
//	│                        unpacked, so each layer is on disk once
//	├── layers/
//	│   ├── <diffid-hex>/    one fully unpacked layer (an overlay lowerdir); read-only by convention
//	│   └── .tmp-*/          a layer being unpacked (or pruned); renamed into place when
//	│                        complete, removed by New if a crash left it behind
//	├── meta/<diffid-hex>.json   facts about an unpacked layer (unpacked size)
//	└── tmp/                 downloads in progress and scratch space (extracted
//	                         oci-archive files), emptied by New
//
// Every directory of the store is mode 0700 (root's, as msbd runs): layer files are owned
// by the sandboxes' mapped ids and keep their setuid bits, so no other host user may
// reach them. The overlay that stacks them is mounted by root, which is all the access
// they need.
//
// A blob or a layer directory exists only once it is complete and verified, so their
// existence is the cache: a pull fetches only the blobs it lacks (a retry after a failed
// pull resumes with what was already stored), a layer already unpacked is not even
// downloaded, and a second Get of an image contacts no registry and unpacks nothing.
// A reference is recorded in refs.json only once all its blobs and layers are in place,
// so a failed pull leaves nothing half-visible. Concurrent pulls share per-digest locks:
// each blob is downloaded once and each layer unpacked once. Prune removes what no
// recorded reference uses and no sandbox mounts; pulls wait while it runs.
//
// Plain HTTP is used only for loopback registries and those named with
// WithInsecureRegistries; every other request without TLS is refused before it leaves
// the process, including go-containerregistry's HTTP fallback for private-range hosts.
//
// Layers are hostile input. The unpacker writes every entry through an os.Root opened on
// the layer's temporary directory, or through *at system calls on a directory descriptor
// obtained from it with O_NOFOLLOW on the last component, so no entry, symlink or hardlink
// can reach outside the layer. Device nodes in an image are never created; whiteouts are
// converted to overlayfs markers (a 0:0 character device, or the trusted.overlay.opaque
// xattr) by the unpacker itself.
package images
