package images

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"msb.dev/msb/images/imagetest"
)

// TestUnpackRefusesLongTail: bytes after the tar end marker are hashed for the
// diffID; gigabytes of them would keep a worker busy for nothing.
func TestUnpackRefusesLongTail(t *testing.T) {
	tarball, err := imagetest.Tar(imagetest.File("a", 0o644, "x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		tail    int
		wantErr bool
	}{{"padding", 10 << 10, false}, {"long-tail", 2 << 20, true}} {
		t.Run(c.name, func(t *testing.T) {
			root, err := os.OpenRoot(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			stream := append(append([]byte(nil), tarball...), make([]byte, c.tail)...)
			_, _, err = unpackTar(context.Background(), root, bytes.NewReader(stream), "sha256:test", idMap{}, 1<<30, 1<<30)
			var inv *InvalidImageError
			if c.wantErr != errors.As(err, &inv) {
				t.Fatalf("err = %v, want refusal %v", err, c.wantErr)
			}
			if c.wantErr && !strings.Contains(err.Error(), "after the end of the tar archive") {
				t.Fatalf("message %q", err)
			}
		})
	}
}
