package container

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("cat /proc/1/status > /.msb/status-copy; exec sleep 1000")
	ctx := context.Background()
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	t.Log(waitFor(t, filepath.Join(f.d.AgentDir(spec.ID), "status-copy"), 5*time.Second))
}
