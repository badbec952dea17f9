package images_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"msb.dev/msb/images"
	"msb.dev/msb/images/imagetest"
)

// blobGets is the number of GETs of blob d from reg (of any blob if d is zero).
func blobGets(reg *imagetest.Registry, d v1.Hash) int {
	if d == (v1.Hash{}) {
		return reg.Requests("GET ", "/blobs/")
	}
	return reg.Requests("GET ", "/blobs/"+d.String())
}

// randomLayer is a layer with one file of n pseudo-random (incompressible) bytes.
func randomLayer(t testing.TB, seed uint64, n int) v1.Layer {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	l, err := imagetest.Layer(imagetest.Dir("data/", 0o755), imagetest.File(fmt.Sprintf("data/layer-%d", seed), 0o644, string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := imagetest.Image(v1.Config{Cmd: []string{"run"}, Env: []string{"A=b"}}, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t testing.TB, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// blobsOf returns the config and layer digests of img.
func blobsOf(t testing.TB, img v1.Image) (config v1.Hash, layers []v1.Hash) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		layers = append(layers, l.Digest)
	}
	return m.Config.Digest, layers
}

func TestPullAndCache(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	want := imageOf(t, randomLayer(t, 1, 64<<10), randomLayer(t, 2, 32<<10), randomLayer(t, 3, 1<<10))
	ref, _ := tr.Push(t, "team/app:v1", want)
	ctx := context.Background()

	var mu sync.Mutex
	complete := map[string]int{}
	img, err := s.Pull(ctx, ref, images.PullIfNotPresent, func(p images.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Done > p.Total || p.Total <= 0 {
			t.Errorf("progress %+v", p)
		}
		if p.Complete {
			complete[p.Layer]++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digestOf(t, want).String() || img.Ref != ref {
		t.Errorf("got %s %s, want %s", img.Ref, img.Digest, digestOf(t, want))
	}
	if len(img.Layers) != 3 || strings.Join(img.Config.Cmd, " ") != "run" || img.Size != 64<<10+32<<10+1<<10 {
		t.Errorf("image %+v", img)
	}
	if b, err := os.ReadFile(filepath.Join(img.Layers[1], "data/layer-2")); err != nil || len(b) != 32<<10 {
		t.Errorf("layer 2 content: %d bytes, %v", len(b), err)
	}
	cfg, layers := blobsOf(t, want)
	for _, d := range append(layers, cfg) {
		if n := blobGets(tr, d); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", d, n)
		}
	}
	for _, d := range layers {
		if complete[d.String()] != 1 {
			t.Errorf("layer %s: %d completion reports", d, complete[d.String()])
		}
	}
	if n := blobGets(tr, v1.Hash{}); n != 4 {
		t.Errorf("%d blob GETs, want 4:\n%s", n, tr.Summary())
	}
	// One copy of each layer on disk: the compressed blobs go once unpacked;
	// the config stays.
	blobs := filepath.Join(filepath.Dir(filepath.Dir(img.Layers[0])), "blobs", "sha256")
	for _, d := range layers {
		if _, err := os.Stat(filepath.Join(blobs, d.Hex)); err == nil {
			t.Errorf("compressed layer blob %s kept after unpacking", d)
		}
	}
	if _, err := os.Stat(filepath.Join(blobs, cfg.Hex)); err != nil {
		t.Errorf("config blob: %v", err)
	}

	// A second Get, and a Get from a store reopened on the same directory, contact
	// the registry not at all and unpack nothing.
	tr.Reset()
	again, err := s.Get(ctx, ref)
	if err != nil || again.Digest != img.Digest || strings.Join(again.Layers, ":") != strings.Join(img.Layers, ":") {
		t.Fatalf("second Get: %+v, %v", again, err)
	}
	s2, err := images.New(s.Dir(), images.WithIDMap(hostUID, hostGID, 65536))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s2.Get(ctx, ref); err != nil || again.Digest != img.Digest || again.Size != img.Size {
		t.Fatalf("reopened store: %+v, %v", again, err)
	}
	if n := tr.Requests(""); n != 0 || s.Unpacks() != 3 || s2.Unpacks() != 0 {
		t.Errorf("cache hit made %d requests, unpacked %d+%d:\n%s", n, s.Unpacks(), s2.Unpacks(), tr.Summary())
	}

	infos, err := s2.List()
	if err != nil || len(infos) != 1 {
		t.Fatalf("List: %+v, %v", infos, err)
	}
	in := infos[0]
	cf, _ := want.ConfigFile()
	if in.Ref != ref || in.Name != ref || in.Digest != img.Digest || in.Size != img.Size || len(in.Layers) != 3 ||
		in.Layers[0] != cf.RootFS.DiffIDs[0].String() || !in.Created.Equal(imagetest.Epoch) {
		t.Errorf("List: %+v", in)
	}
}

func TestDockerHubNames(t *testing.T) {
	// Only parsing: nothing is sent anywhere.
	for ref, want := range map[string]string{
		"python:3.12":              "index.docker.io/library/python:3.12",
		"docker.io/library/python": "index.docker.io/library/python:latest",
		"ghcr.io/org/tool@sha256:" + strings.Repeat("a", 64): "ghcr.io/org/tool@sha256:" + strings.Repeat("a", 64),
	} {
		r, err := name.ParseReference(ref)
		if err != nil || r.Name() != want {
			t.Errorf("%s: %v, %v; want %s", ref, r, err, want)
		}
	}
}

func TestSharedLayersDownloadOnce(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	base1, base2 := randomLayer(t, 10, 16<<10), randomLayer(t, 11, 16<<10)
	a := imageOf(t, base1, base2, randomLayer(t, 12, 100))
	b := imageOf(t, base1, base2, randomLayer(t, 13, 100))
	refA, _ := tr.Push(t, "a:1", a)
	refB, _ := tr.Push(t, "b:1", b)
	tr.Reset()
	ctx := context.Background()
	imgA, err := s.Get(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := s.Get(ctx, refB)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []v1.Layer{base1, base2} {
		if n := blobGets(tr, digestOf(t, l)); n != 1 {
			t.Errorf("shared layer fetched %d times", n)
		}
	}
	if imgA.Layers[0] != imgB.Layers[0] || imgA.Layers[1] != imgB.Layers[1] || imgA.Layers[2] == imgB.Layers[2] {
		t.Errorf("layers not shared: %v %v", imgA.Layers, imgB.Layers)
	}
	if n := s.Unpacks(); n != 4 {
		t.Errorf("%d unpacks, want 4", n)
	}
}

func TestConcurrentPullsDownloadOnce(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	img := imageOf(t, randomLayer(t, 20, 256<<10), randomLayer(t, 21, 256<<10), randomLayer(t, 22, 256<<10))
	ref, _ := tr.Push(t, "c:1", img)
	other, _ := tr.Push(t, "c:2", imageOf(t, randomLayer(t, 20, 256<<10), randomLayer(t, 23, 10)))
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := ref
			if i%4 == 3 {
				r = other
			}
			if _, err := s.Pull(context.Background(), r, images.PullIfNotPresent, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for k, v := range tr.Counts() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/") && v != 1 {
			t.Errorf("%s ×%d, want once", k, v)
		}
	}
	if n := tr.Requests("GET ", "/v2/c/manifests/1"); n != 1 {
		t.Errorf("manifest of c:1 fetched %d times", n)
	}
	if n := blobGets(tr, v1.Hash{}); n != 6 { // 3 layers + config, 1 layer + config
		t.Errorf("%d blob GETs, want 6:\n%s", n, tr.Summary())
	}
}

func TestPullPolicies(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	ctx := context.Background()
	base := randomLayer(t, 30, 8<<10)
	v1img := imageOf(t, base)
	ref, _ := tr.Push(t, "p:latest", v1img)

	// Never, before anything was pulled: no request at all.
	_, err := s.Pull(ctx, ref, images.PullNever, nil)
	if !errors.Is(err, images.ErrImageNotPresent) || err.Error() != fmt.Sprintf("image %q is not present and imagePullPolicy is Never", ref) {
		t.Errorf("Never: %v", err)
	}
	if n := tr.Requests(""); n != 0 {
		t.Errorf("Never contacted the registry:\n%s", tr.Summary())
	}

	first, err := s.Pull(ctx, ref, images.PullAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img, err := s.Pull(ctx, ref, images.PullNever, nil); err != nil || img.Digest != first.Digest {
		t.Errorf("Never after a pull: %v", err)
	}

	// Always with an unchanged tag: a HEAD of the manifest and nothing else.
	tr.Reset()
	if img, err := s.Pull(ctx, ref, images.PullAlways, nil); err != nil || img.Digest != first.Digest {
		t.Fatalf("Always: %+v, %v", img, err)
	}
	if blobGets(tr, v1.Hash{}) != 0 || tr.Requests("GET ", "/manifests/") != 0 || tr.Requests("HEAD ", "/manifests/") != 1 {
		t.Errorf("Always, unchanged:\n%s", tr.Summary())
	}

	// The tag moves to an image with one more layer.
	extra := randomLayer(t, 31, 8<<10)
	v2img := imageOf(t, base, extra)
	tr.Push(t, "p:latest", v2img)

	// IfNotPresent keeps what it has; Always picks up the new digest, downloading only
	// the new layer (and the new config).
	if img, err := s.Get(ctx, ref); err != nil || img.Digest != first.Digest {
		t.Errorf("IfNotPresent after the tag moved: %+v, %v", img, err)
	}
	if n := tr.Requests(""); n != 0 {
		t.Errorf("IfNotPresent contacted the registry:\n%s", tr.Summary())
	}
	second, err := s.Pull(ctx, ref, images.PullAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Digest != digestOf(t, v2img).String() {
		t.Errorf("Always got %s, want %s", second.Digest, digestOf(t, v2img))
	}
	cfg2, _ := blobsOf(t, v2img)
	if blobGets(tr, digestOf(t, base)) != 0 || blobGets(tr, digestOf(t, extra)) != 1 || blobGets(tr, cfg2) != 1 || blobGets(tr, v1.Hash{}) != 2 {
		t.Errorf("Always, moved tag:\n%s", tr.Summary())
	}
	// Now IfNotPresent follows the record Always made.
	if img, err := s.Get(ctx, ref); err != nil || img.Digest != second.Digest {
		t.Errorf("IfNotPresent after Always: %+v, %v", img, err)
	}
}

func TestDigestPinning(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	ctx := context.Background()
	old := imageOf(t, randomLayer(t, 40, 4<<10))
	tag, _ := tr.Push(t, "pin:v", old)
	oldD := digestOf(t, old)
	if _, err := s.Get(ctx, tag); err != nil {
		t.Fatal(err)
	}
	tr.Push(t, "pin:v", imageOf(t, randomLayer(t, 41, 4<<10)))

	// Pinned to the old manifest after the tag moved: served from the store, with no
	// request at all, in both spellings.
	for _, ref := range []string{tr.Host + "/pin@" + oldD.String(), tr.Host + "/pin:v@" + oldD.String()} {
		img, err := s.Get(ctx, ref)
		if err != nil || img.Digest != oldD.String() {
			t.Errorf("%s: %+v, %v", ref, img, err)
		}
	}
	if n := tr.Requests(""); n != 0 {
		t.Errorf("pinned pull contacted the registry:\n%s", tr.Summary())
	}

	// A fresh store fetches exactly that manifest by digest, and not the tag.
	s2 := newStore(t)
	img, err := s2.Pull(ctx, tr.Host+"/pin:v@"+oldD.String(), images.PullIfNotPresent, nil)
	if err != nil || img.Digest != oldD.String() {
		t.Fatalf("fresh store: %+v, %v", img, err)
	}
	if tr.Requests("/manifests/v") != 0 || tr.Requests("GET ", "/manifests/"+oldD.String()) != 1 {
		t.Errorf("fresh store requests:\n%s", tr.Summary())
	}
	tr.Reset()
	if _, err := s2.Pull(ctx, tr.Host+"/pin@"+oldD.String(), images.PullAlways, nil); err != nil {
		t.Fatal(err)
	}
	if n := blobGets(tr, v1.Hash{}) + tr.Requests("/manifests/"); n != 0 {
		t.Errorf("Always with a cached digest made requests:\n%s", tr.Summary())
	}

	// A digest the registry does not have.
	bad := tr.Host + "/pin@sha256:" + strings.Repeat("0", 64)
	if _, err := s2.Get(ctx, bad); err == nil {
		t.Error("unknown digest accepted")
	}
}

func TestMultiPlatformIndex(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	hostImg := imageOf(t, randomLayer(t, 50, 1<<10))
	foreignLayer := randomLayer(t, 51, 1<<10)
	foreign := imageOf(t, foreignLayer)
	host := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	other := v1.Platform{OS: "linux", Architecture: "s390x"}
	if runtime.GOARCH == "s390x" {
		other.Architecture = "amd64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &other}},
		mutate.IndexAddendum{Add: hostImg, Descriptor: v1.Descriptor{Platform: &host}},
	)
	ref, _ := tr.PushIndex(t, "multi:1", idx)
	img, err := s.Get(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digestOf(t, hostImg).String() {
		t.Errorf("got %s, want the host image %s", img.Digest, digestOf(t, hostImg))
	}
	if n := blobGets(tr, digestOf(t, foreignLayer)); n != 0 {
		t.Errorf("foreign layer fetched")
	}
	// Pinned to the index digest: resolved from the store.
	tr.Reset()
	if img, err := s.Get(context.Background(), tr.Host+"/multi@"+digestOf(t, idx).String()); err != nil || img.Digest != digestOf(t, hostImg).String() {
		t.Errorf("index digest: %+v, %v", img, err)
	}
	if n := tr.Requests(""); n != 0 {
		t.Errorf("requests:\n%s", tr.Summary())
	}
	// Only a foreign platform: a clear error.
	only := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &other}})
	foreignRef, _ := tr.PushIndex(t, "foreign:1", only)
	if _, err := s.Get(context.Background(), foreignRef); err == nil || !strings.Contains(err.Error(), "no manifest for linux/"+runtime.GOARCH) {
		t.Errorf("foreign only: %v", err)
	}
}

func TestRegistryErrors(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	tr.Push(t, "exists:1", imageOf(t, randomLayer(t, 60, 10)))
	tr.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/private/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"msb-test: authentication required for private"}]}`)
			return true
		}
		return false
	})
	for ref, want := range map[string]struct {
		status int
		msg    string
	}{
		tr.Host + "/exists:nope":   {404, "MANIFEST_UNKNOWN"},
		tr.Host + "/missing:1":     {404, "NAME_UNKNOWN"},
		tr.Host + "/private/img:1": {401, "msb-test: authentication required for private"},
	} {
		_, err := s.Get(context.Background(), ref)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != want.status || !strings.Contains(err.Error(), want.msg) || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: %v, want status %d and %q", ref, err, want.status, want.msg)
		}
		t.Log(err)
	}
	if infos, _ := s.List(); len(infos) != 0 {
		t.Errorf("failed pulls recorded: %+v", infos)
	}
}

func TestInterruptedPullResumes(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	layers := []v1.Layer{randomLayer(t, 70, 64<<10), randomLayer(t, 71, 64<<10), randomLayer(t, 72, 512<<10)}
	img := imageOf(t, layers...)
	ref, _ := tr.Push(t, "int:1", img)
	victim := digestOf(t, layers[2])
	var failed sync.Once
	tr.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
			return false
		}
		hit := false
		failed.Do(func() { hit = true })
		if !hit {
			return false
		}
		// Half the blob, then the connection drops.
		w.Header().Set("Content-Length", "600000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 100000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	ctx := context.Background()
	if _, err := s.Get(ctx, ref); err == nil {
		t.Fatal("interrupted pull succeeded")
	} else {
		t.Log(err)
	}
	if infos, _ := s.List(); len(infos) != 0 {
		t.Errorf("half-pulled image recorded: %+v", infos)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d entries", len(ents))
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs/sha256", victim.Hex)); err == nil {
		t.Error("the interrupted blob is in the store")
	}
	cached := map[v1.Hash]bool{}
	for _, l := range layers[:2] {
		d := digestOf(t, l)
		if _, err := os.Stat(filepath.Join(s.Dir(), "blobs/sha256", d.Hex)); err == nil {
			cached[d] = true
		}
	}
	if _, err := s.Pull(ctx, ref, images.PullNever, nil); !errors.Is(err, images.ErrImageNotPresent) {
		t.Errorf("Never after a failed pull: %v", err)
	}

	got, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, img).String() {
		t.Errorf("digest %s", got.Digest)
	}
	if n := blobGets(tr, victim); n != 2 {
		t.Errorf("interrupted blob fetched %d times, want 2", n)
	}
	for d := range cached {
		if n := blobGets(tr, d); n != 1 {
			t.Errorf("blob %s was in the store but fetched %d times", d, n)
		}
	}
	t.Logf("%d of 2 other layers were complete when the pull failed", len(cached))
}

func TestCorruptBlobFromRegistry(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	layer := randomLayer(t, 80, 32<<10)
	img := imageOf(t, randomLayer(t, 81, 100), layer)
	ref, _ := tr.Push(t, "corrupt:1", img)
	d := digestOf(t, layer)
	rc, err := layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	good, _ := io.ReadAll(rc)
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0xff
	tr.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			w.Header().Set("Content-Length", fmt.Sprint(len(bad)))
			w.Write(bad)
			return true
		}
		return false
	})
	_, err = s.Get(context.Background(), ref)
	if err == nil {
		t.Fatal("corrupt blob accepted")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), d.Hex[:12]) {
		t.Errorf("error does not name the blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs/sha256", d.Hex)); err == nil {
		t.Error("corrupt blob stored")
	}
	cf, _ := img.ConfigFile()
	if _, err := os.Stat(filepath.Join(s.Dir(), "layers", cf.RootFS.DiffIDs[1].Hex)); err == nil {
		t.Error("corrupt layer unpacked")
	}
	if infos, _ := s.List(); len(infos) != 0 {
		t.Errorf("recorded: %+v", infos)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d entries", len(ents))
	}
}

func TestHostileFromRegistry(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "victim"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, c := range imagetest.HostileCases(host) {
		t.Run(c.Name, func(t *testing.T) {
			img, err := imagetest.ImageOf(c.Entries...)
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			diffID := cf.RootFS.DiffIDs[0]
			ref, _ := tr.Push(t, fmt.Sprintf("hostile/%d:x", i), img)
			_, err = s.Get(context.Background(), ref)
			var inv *images.InvalidImageError
			if !errors.As(err, &inv) || inv.Layer != diffID.String() || inv.Entry != c.Entry {
				t.Fatalf("Get: %v, want an InvalidImageError for layer %s entry %q", err, diffID, c.Entry)
			}
			checkHostUntouched(t, host)
			checkNoLayer(t, s, diffID)
		})
	}
	if infos, _ := s.List(); len(infos) != 0 {
		t.Errorf("hostile images recorded: %+v", infos)
	}
}

func TestRegistrySizeLimit(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t, images.WithMaxUnpackedSize(50<<10))
	ref, _ := tr.Push(t, "big:1", imageOf(t, randomLayer(t, 90, 30<<10), randomLayer(t, 91, 30<<10)))
	_, err := s.Get(context.Background(), ref)
	var inv *images.InvalidImageError
	if !errors.As(err, &inv) || !strings.Contains(inv.Reason, "limit of 51200 bytes") {
		t.Fatalf("Get: %v", err)
	}
}

func TestRemoveAndPrune(t *testing.T) {
	tr := imagetest.NewRegistry(t)
	s := newStore(t)
	ctx := context.Background()
	base := randomLayer(t, 100, 8<<10)
	onlyA, onlyB := randomLayer(t, 101, 8<<10), randomLayer(t, 102, 8<<10)
	a, b := imageOf(t, base, onlyA), imageOf(t, base, onlyB)
	refA, _ := tr.Push(t, "a:1", a)
	refB, _ := tr.Push(t, "b:1", b)
	imgA, err := s.Get(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := s.Get(ctx, refB)
	if err != nil {
		t.Fatal(err)
	}
	// A local image is listed too, and its layer is kept while it is recorded.
	local, err := imagetest.ImageOf(imagetest.File("local", 0o644, "x"))
	if err != nil {
		t.Fatal(err)
	}
	localRef := "oci:" + writeLayout(t, local, "l")
	imgL, err := s.Get(ctx, localRef)
	if err != nil {
		t.Fatal(err)
	}
	infos, _ := s.List()
	if len(infos) != 3 || infos[2].Ref != localRef || infos[2].Digest != digestOf(t, local).String() {
		t.Fatalf("List: %+v", infos)
	}

	if err := s.Remove(refA); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(refA); !errors.Is(err, images.ErrImageNotPresent) {
		t.Errorf("second Remove: %v", err)
	}
	// A's own layer is still mounted by a sandbox.
	inUse := map[string]bool{imgA.Layers[1]: true}
	res, err := s.Prune(func(dir string) bool { return inUse[dir] })
	if err != nil {
		t.Fatal(err)
	}
	// A's manifest and config go (its compressed layer blobs went after the
	// unpack already); no layer does.
	if res.Blobs != 2 || res.Layers != 0 || res.Bytes <= 0 {
		t.Errorf("first prune: %+v", res)
	}
	for _, dir := range append(append([]string{}, imgA.Layers...), append(imgB.Layers, imgL.Layers...)...) {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("layer %s removed: %v", dir, err)
		}
	}
	// The sandbox is gone: A's own layer goes now, the shared one stays.
	res, err = s.Prune(nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != 0 || res.Layers != 1 || res.Bytes != 8<<10 {
		t.Errorf("second prune: %+v", res)
	}
	if _, err := os.Stat(imgA.Layers[1]); err == nil {
		t.Error("A's layer survived")
	}
	if _, err := os.Stat(imgA.Layers[0]); err != nil {
		t.Error("shared layer removed")
	}
	// B still works without the registry; A needs it again (and gets only its own layer).
	tr.Reset()
	if _, err := s.Pull(ctx, refB, images.PullNever, nil); err != nil {
		t.Errorf("B after prune: %v", err)
	}
	if _, err := s.Pull(ctx, refA, images.PullNever, nil); !errors.Is(err, images.ErrImageNotPresent) {
		t.Errorf("A after prune, Never: %v", err)
	}
	if _, err := s.Get(ctx, refA); err != nil {
		t.Fatal(err)
	}
	if blobGets(tr, digestOf(t, base)) != 0 || blobGets(tr, digestOf(t, onlyA)) != 1 {
		t.Errorf("re-pull of A:\n%s", tr.Summary())
	}
	// Remove by canonical name, then by digest.
	if err := s.Remove("docker://" + refB); err != nil {
		t.Errorf("Remove by name: %v", err)
	}
	if err := s.Remove(digestOf(t, local).String()); err != nil {
		t.Errorf("Remove by digest: %v", err)
	}
	if infos, _ := s.List(); len(infos) != 1 || infos[0].Ref != refA {
		t.Errorf("List: %+v", infos)
	}
}

// recordingTransport records requests and answers none of them: nothing is sent.
type recordingTransport struct {
	mu   sync.Mutex
	urls []string
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.Scheme+"://"+req.URL.Host)
	r.mu.Unlock()
	return nil, errors.New("recording transport: not sent")
}

func TestPlainHTTPDecision(t *testing.T) {
	listed := images.WithInsecureRegistries([]string{"registry.local:5000", "HTTP://Mirror.Corp/"})
	for _, c := range []struct {
		host   string
		listed bool // allowed only when listed
		always bool // allowed anyway
	}{
		{"127.0.0.1:5000", false, true},
		{"127.1.2.3", false, true},
		{"localhost:5000", false, true},
		{"localhost", false, true},
		{"[::1]:5000", false, true},
		{"::1", false, true},
		{"registry.local:5000", true, false},
		{"mirror.corp", true, false},
		{"registry.local:5001", false, false},
		{"registry.local", false, false},
		{"10.1.2.3:5000", false, false},
		{"192.168.1.1", false, false},
		{"172.16.0.1:443", false, false},
		{"foo.localhost:5000", false, false},
		{"127.0.0.1.example.com", false, false},
		{"index.docker.io", false, false},
	} {
		if got := images.PlainHTTPAllowed(c.host); got != c.always {
			t.Errorf("%s: allowed %v without list, want %v", c.host, got, c.always)
		}
		if got := images.PlainHTTPAllowed(c.host, listed); got != (c.always || c.listed) {
			t.Errorf("%s: allowed %v with list, want %v", c.host, got, c.always || c.listed)
		}
	}
}

// TestNoPlainHTTPFallback pulls from private-range and .local registries through a
// transport that records requests without sending them: go-containerregistry would
// try plain HTTP for these hosts; msb must not, unless the host is listed.
func TestNoPlainHTTPFallback(t *testing.T) {
	for _, c := range []struct {
		ref    string
		listed []string
		http   bool
	}{
		{"10.1.2.3:5000/app:1", nil, false},
		{"192.168.1.1/app:1", nil, false},
		{"registry.local:5000/app:1", nil, false},
		{"registry.localhost:5000/app:1", nil, false},
		{"registry.local:5000/app:1", []string{"registry.local:5000"}, true},
		{"10.1.2.3:5000/app:1", []string{"10.1.2.3:5000"}, true},
	} {
		rt := &recordingTransport{}
		s := newStore(t, images.WithTransport(rt), images.WithInsecureRegistries(c.listed))
		_, err := s.Get(context.Background(), c.ref)
		if err == nil {
			t.Fatalf("%s: pull succeeded", c.ref)
		}
		https, plain := 0, 0
		for _, u := range rt.urls {
			switch {
			case strings.HasPrefix(u, "https://"):
				https++
			case strings.HasPrefix(u, "http://"):
				plain++
			}
		}
		if https == 0 || (plain > 0) != c.http {
			t.Errorf("%s (listed %v): requests %v, want plain HTTP %v", c.ref, c.listed, rt.urls, c.http)
		}
		// go-containerregistry tries HTTP for private ranges (and .localhost); the
		// attempt must be stopped before it reaches the transport, and say why.
		if !c.http && strings.Contains(err.Error(), `"http://`) && !strings.Contains(err.Error(), "refusing plain HTTP") {
			t.Errorf("%s: error does not say why: %v", c.ref, err)
		}
		t.Logf("%s: %v", c.ref, err)
	}
}

// BenchmarkPullVsCached compares the first pull of a 5-layer image (1 MiB per layer)
// from a registry on loopback with a Get of the same image once it is in the store.
func BenchmarkPullVsCached(b *testing.B) {
	tr := imagetest.NewRegistry(b)
	var layers []v1.Layer
	for i := range 5 {
		layers = append(layers, randomLayer(b, uint64(200+i), 1<<20))
	}
	ref, _ := tr.Push(b, "bench:1", imageOf(b, layers...))
	ctx := context.Background()
	var first, cached float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := newStore(b)
		b.StartTimer()
		t0 := time.Now()
		if _, err := s.Get(ctx, ref); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		const hits = 20
		for range hits {
			if _, err := s.Get(ctx, ref); err != nil {
				b.Fatal(err)
			}
		}
		t2 := time.Now()
		first += float64(t1.Sub(t0))
		cached += float64(t2.Sub(t1)) / hits
	}
	n := float64(b.N)
	b.ReportMetric(first/n/1e6, "first-pull-ms")
	b.ReportMetric(cached/n/1e6, "cached-get-ms")
	b.ReportMetric(first/cached, "speedup")
}
