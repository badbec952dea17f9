package secretinject

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// PlaceholderPrefix starts every placeholder, so the proxy can find them.
const PlaceholderPrefix = "msb-placeholder-"

// Placeholder is the stand-in value a sandbox sees for key of a Secret:
// unique per sandbox (uid), namespace, secret and key, stable across restarts
// of the sandbox, and meaningless outside msb's egress proxy.
func Placeholder(uid, namespace, secret, key string) string {
	h := sha256.Sum256([]byte(uid + "\x00" + namespace + "\x00" + secret + "\x00" + key))
	return PlaceholderPrefix + hex.EncodeToString(h[:12])
}

// IsPlaceholder reports whether s has the shape of a placeholder.
func IsPlaceholder(s string) bool {
	rest, ok := strings.CutPrefix(s, PlaceholderPrefix)
	if !ok || len(rest) != 24 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}
