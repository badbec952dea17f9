// Package images resolves a Sandbox image reference to read-only, content-addressed,
// unpacked layers that the container driver stacks as overlayfs lower directories.
//
// On disk, beneath the directory given to New (normally <state>/images):
//
//	images/
//	├── idmap.json           the id map the layers were unpacked for (a store keeps one)
//	├── layers/
//	│   ├── <diffid-hex>/    one fully unpacked layer (an overlay lowerdir); read-only by convention
//	│   └── .tmp-*/          a layer being unpacked; renamed into place when complete,
//	│                        removed by New if a crash left it behind
//	├── meta/<diffid-hex>.json   facts about an unpacked layer (unpacked size)
//	└── tmp/                 scratch space (extracted oci-archive files), emptied by New
//
// A layer directory exists only once its content was unpacked completely and its
// diffID verified, so its existence is the cache index: a second Get of the same image
// unpacks nothing.
//
// Layers are hostile input. The unpacker writes every entry through an os.Root opened on
// the layer's temporary directory, or through *at system calls on a directory descriptor
// obtained from it with O_NOFOLLOW on the last component, so no entry, symlink or hardlink
// can reach outside the layer. Device nodes in an image are never created; whiteouts are
// converted to overlayfs markers (a 0:0 character device, or the trusted.overlay.opaque
// xattr) by the unpacker itself.
package images
