package reconciler

import (
	"strings"
	"testing"

	"msb.dev/msb/images"
)

func TestZZDebug(t *testing.T) {
	h := newHarness(t)
	h.create("web", nil)
	h.mustReconcile("web")
	t.Logf("status1 %+v", h.get("web").Status)
	h.drv.reset()
	h.imgs.set(&images.Image{Ref: testImage, Digest: "sha256:" + strings.Repeat("d", 64), Config: images.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"serve"}}, Layers: []string{h.mkLayer("v2", nil)}})
	h.mustReconcile("web")
	t.Logf("calls %q", h.drv.allCalls())
	t.Logf("status2 %+v", h.get("web").Status)
	t.Logf("events %q", h.reasons("web"))
}
