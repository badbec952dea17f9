package imagetest_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"msb.dev/msb/images/imagetest"
)

// TestRegistry: a pushed image pulls back with the same digest, Push leaves the
// counts at zero, each blob download is counted, and an interceptor answers instead
// of the registry.
func TestRegistry(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	img, err := imagetest.ImageOf(imagetest.File("hello", 0o644, "world"))
	if err != nil {
		t.Fatal(err)
	}
	ref, digest := reg.Push(t, "team/app:v1", img)
	if ref != reg.Host+"/team/app:v1" {
		t.Errorf("Push returned %q, want %q", ref, reg.Host+"/team/app:v1")
	}
	if n := reg.Requests(); n != 0 {
		t.Errorf("%d requests counted after Push, want 0:\n%s", n, reg.Summary())
	}

	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := got.Digest(); err != nil || d.String() != digest {
		t.Fatalf("pulled digest %v (%v), want %s", d, err, digest)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers { // read every layer so its blob is fetched
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if _, err := got.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	if n := reg.Requests("GET ", "/blobs/"); n != 2 { // one layer and the config
		t.Errorf("%d blob GETs, want 2:\n%s", n, reg.Summary())
	}

	reg.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		http.Error(w, "teapot", http.StatusTeapot)
		return true
	})
	_, err = remote.Image(r)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusTeapot {
		t.Errorf("pull through the interceptor: %v, want status 418", err)
	}
	reg.Intercept(nil)
	if _, err := remote.Image(r); err != nil {
		t.Errorf("pull after removing the interceptor: %v", err)
	}
}
