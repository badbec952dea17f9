package images

import (
	"errors"
	"fmt"
	"strings"
)

// ErrImageNotPresent is returned (wrapped) by Pull with PullNever for an image that is
// not in the store, and by Remove for a reference the store does not know. Its text reads
// as part of the message: `image "x" is not present and imagePullPolicy is Never`.
var ErrImageNotPresent = errors.New("not present")

// InvalidImageError reports an image whose content msb refuses to unpack: an entry that
// escapes the layer root, a hardlink outside the layer, an owner outside the sandbox's
// user namespace, a layer larger than the limit, or content that does not match its
// digest. Retrying does not help; the image must be fixed.
type InvalidImageError struct {
	Layer  string // layer diffID (or digest), "sha256:..."
	Entry  string // tar entry name as written in the layer, empty for the whole layer
	Reason string
}

func (e *InvalidImageError) Error() string {
	var b strings.Builder
	if e.Layer != "" {
		fmt.Fprintf(&b, "layer %s: ", shortDigest(e.Layer))
	}
	if e.Entry != "" {
		fmt.Fprintf(&b, "entry %q: ", e.Entry)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// shortDigest abbreviates "sha256:<64 hex>" to "sha256:<12 hex>…" for messages.
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12] + "…"
}
