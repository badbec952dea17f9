package apiserver_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/images"
	"msb.dev/msb/images/imagetest"
	"msb.dev/msb/store"
	"msb.dev/msb/store/storetest"
)

// imageEnv is the API over a real store and a real image store, with a registry
// on loopback.
type imageEnv struct {
	store  *store.Store
	images *images.Store
	imgDir string
	client *client.Client
	reg    *imagetest.Registry
}

// newImageEnv serves the API with svc as its image service; svc nil means a real
// images.Store in a temp dir, wrap (if not nil) may wrap it.
func newImageEnv(t *testing.T, wrap func(apiserver.ImageService) apiserver.ImageService) *imageEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root: unpacking image layers keeps their owners (chown)")
	}
	dir, err := os.MkdirTemp("/tmp", "msbimg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := storetest.Open(t)
	e := &imageEnv{store: st, imgDir: filepath.Join(dir, "images")}
	e.images, err = images.New(e.imgDir)
	if err != nil {
		t.Fatal(err)
	}
	var svc apiserver.ImageService = e.images
	if wrap != nil {
		svc = wrap(svc)
	}
	e.reg = imagetest.NewRegistry(t)

	sock := filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: st, Images: svc})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.client = client.New(sock)
	return e
}

// testImage is an image of n layers, each holding one file of random content.
func testImage(t *testing.T, n int) v1.Image {
	t.Helper()
	var layers []v1.Layer
	for i := range n {
		body := make([]byte, 64<<10)
		rand.Read(body)
		l, err := imagetest.Layer(imagetest.Dir("data/", 0o755), imagetest.File(fmt.Sprintf("data/f%d", i), 0o644, string(body)))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := imagetest.Image(v1.Config{Cmd: []string{"sh"}}, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// createSandbox stores a Sandbox of image with status.imageDigest digest (if not
// empty); deleting makes it one being deleted (its finalizer keeps it).
func (e *imageEnv) createSandbox(t *testing.T, ns, name, image, digest string, deleting bool) {
	t.Helper()
	sb := sandbox(ns, name, nil)
	sb.Spec.Image = image
	sb.Metadata.Finalizers = []string{v1alpha1.FinalizerSandbox}
	if err := e.store.Create(sb); err != nil {
		t.Fatal(err)
	}
	if digest != "" {
		var cur v1alpha1.Sandbox
		if err := e.store.Get(v1alpha1.KindSandbox, ns, name, &cur); err != nil {
			t.Fatal(err)
		}
		cur.Status.ImageDigest = digest
		if err := e.store.UpdateStatus(&cur); err != nil {
			t.Fatal(err)
		}
	}
	if deleting {
		if err := e.store.Delete(v1alpha1.KindSandbox, ns, name); err != nil {
			t.Fatal(err)
		}
		var cur v1alpha1.Sandbox
		if err := e.store.Get(v1alpha1.KindSandbox, ns, name, &cur); err != nil || cur.Metadata.DeletionTimestamp == nil {
			t.Fatalf("sandbox %s/%s should be being deleted: %v", ns, name, err)
		}
	}
}

func layerDirs(t *testing.T, dir string, diffIDs []string) (present, missing []string) {
	t.Helper()
	for _, d := range diffIDs {
		p := filepath.Join(dir, "layers", strings.TrimPrefix(d, "sha256:"))
		if _, err := os.Stat(p); err == nil {
			present = append(present, d)
		} else {
			missing = append(missing, d)
		}
	}
	return present, missing
}

func TestImagesUnavailable(t *testing.T) {
	e := newEnv(t) // no Images in its Config
	ctx := ctxT(t)
	_, err := e.client.Images(ctx)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "no image store") {
		t.Errorf("list without an image store: %v, want a 503 saying so", err)
	}
	if _, err := e.client.PullImage(ctx, "busybox", "Always", nil); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("pull without an image store: %v, want 503", err)
	}
	if err := e.client.RemoveImage(ctx, "busybox"); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("rm without an image store: %v, want 503", err)
	}
	if _, _, _, err := e.client.PruneImages(ctx); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("prune without an image store: %v, want 503", err)
	}
}

// checkingPrune wraps an image service and records what its Prune callback answers
// for every layer directory on disk.
type checkingPrune struct {
	apiserver.ImageService
	dir     string
	mu      sync.Mutex
	answers map[string]bool // diffID hex → inUse
}

func (c *checkingPrune) Prune(inUse func(string) bool) (images.PruneResult, error) {
	ents, _ := os.ReadDir(filepath.Join(c.dir, "layers"))
	c.mu.Lock()
	c.answers = map[string]bool{}
	for _, ent := range ents {
		c.answers[ent.Name()] = inUse(filepath.Join(c.dir, "layers", ent.Name()))
	}
	c.mu.Unlock()
	return c.ImageService.Prune(inUse)
}

func TestImageAPI(t *testing.T) {
	var cp *checkingPrune
	e := newImageEnv(t, func(s apiserver.ImageService) apiserver.ImageService {
		cp = &checkingPrune{ImageService: s}
		return cp
	})
	cp.dir = e.imgDir
	ctx := ctxT(t)

	refA, digestA := e.reg.Push(t, "team/a:1", testImage(t, 2))
	refB, digestB := e.reg.Push(t, "team/b:1", testImage(t, 1))
	refC, digestC := e.reg.Push(t, "team/c:1", testImage(t, 2))

	var infoA, infoC v1alpha1.ImageInfo
	t.Run("pull", func(t *testing.T) {
		var mu sync.Mutex
		var progress []v1alpha1.PullProgress
		info, err := e.client.PullImage(ctx, refA, "Always", func(p v1alpha1.PullProgress) {
			mu.Lock()
			progress = append(progress, p)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if info.Ref != refA || info.Digest != digestA || len(info.Layers) != 2 || info.Size < 2*64<<10 || info.Pulled.IsZero() || info.Name == "" {
			t.Errorf("pulled %+v, want %s %s with 2 layers", info, refA, digestA)
		}
		complete := map[string]bool{}
		for _, p := range progress {
			if p.Layer == "" || !strings.HasPrefix(p.Layer, "sha256:") || p.Total <= 0 || p.Done > p.Total {
				t.Errorf("bad progress %+v", p)
			}
			if p.Complete {
				complete[p.Layer] = true
			}
		}
		if len(complete) != 2 {
			t.Errorf("progress %+v: want both layers complete", progress)
		}
		infoA = info
		for _, r := range []string{refB, refC} {
			info, err := e.client.PullImage(ctx, r, "IfNotPresent", nil)
			if err != nil {
				t.Fatal(err)
			}
			if r == refC {
				infoC = info
			}
		}
		// A second pull under the default policy is a cache hit.
		if again, err := e.client.PullImage(ctx, refA, "", nil); err != nil || again.Digest != digestA {
			t.Fatalf("second pull: %+v, %v", again, err)
		}
	})

	t.Run("pull errors", func(t *testing.T) {
		_, err := e.client.PullImage(ctx, e.reg.Host+"/team/missing:1", "Always", nil)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Reason != v1alpha1.ReasonPullFailed || !strings.Contains(ae.Message, "missing") {
			t.Errorf("pull of a missing repository: %v, want PullFailed", err)
		}
		_, err = e.client.PullImage(ctx, e.reg.Host+"/team/missing:1", "Never", nil)
		if !errors.As(err, &ae) || ae.Reason != v1alpha1.ReasonNotPresent || !client.IsNotFound(err) || !strings.Contains(ae.Message, "Never") {
			t.Errorf("pull Never of a missing image: %v, want NotPresent (404)", err)
		}
		hostDir := t.TempDir()
		hostile := imagetest.HostileCases(hostDir)[0]
		img, err := imagetest.ImageOf(hostile.Entries...)
		if err != nil {
			t.Fatal(err)
		}
		refH, _ := e.reg.Push(t, "team/hostile:1", img)
		_, err = e.client.PullImage(ctx, refH, "Always", nil)
		if !errors.As(err, &ae) || ae.Reason != v1alpha1.ReasonInvalidImage || !strings.Contains(ae.Message, hostile.Entry) {
			t.Errorf("pull of a hostile image: %v, want InvalidImage naming %q", err, hostile.Entry)
		}
		_, err = e.client.PullImage(ctx, refA, "Sometimes", nil)
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("pull with a bad policy: %v, want 400", err)
		}
		_, err = e.client.PullImage(ctx, "", "Always", nil)
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("pull without a reference: %v, want 400", err)
		}
	})

	// a uses A by digest, b uses B by reference, c uses A and is being deleted.
	e.createSandbox(t, "default", "a", "somewhere/else:latest", digestA, false)
	e.createSandbox(t, "team", "b", refB, "", false)
	e.createSandbox(t, "team", "c", "another/name:2", digestA, true)

	t.Run("list", func(t *testing.T) {
		list, err := e.client.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, info := range list {
			got[info.Ref] = fmt.Sprintf("%s %d", info.Digest, info.InUse)
		}
		want := map[string]string{
			refA: digestA + " 2",
			refB: digestB + " 1",
			refC: digestC + " 0",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("images %v, want %v", got, want)
		}
	})

	t.Run("rm", func(t *testing.T) {
		err := e.client.RemoveImage(ctx, refA)
		if !client.IsConflict(err) || !strings.Contains(err.Error(), "default/a") || !strings.Contains(err.Error(), "delete the sandbox first") {
			t.Errorf("rm of an image in use: %v, want a conflict naming default/a", err)
		}
		if err := e.client.RemoveImage(ctx, digestB); !client.IsConflict(err) || !strings.Contains(err.Error(), "team/b") {
			t.Errorf("rm by digest of an image in use: %v, want a conflict naming team/b", err)
		}
		if err := e.client.RemoveImage(ctx, e.reg.Host+"/team/nope:1"); !client.IsNotFound(err) {
			t.Errorf("rm of an unknown image: %v, want not found", err)
		}
		if err := e.client.RemoveImage(ctx, refC); err != nil {
			t.Fatalf("rm of an unused image: %v", err)
		}
		list, err := e.client.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 {
			t.Errorf("after rm: %+v, want A and B", list)
		}
	})

	t.Run("prune", func(t *testing.T) {
		blobs, layers, bytes, err := e.client.PruneImages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if layers != 2 || blobs < 2 || bytes <= 0 {
			t.Errorf("prune: %d blobs, %d layers, %d bytes; want C's 2 layers and its blobs", blobs, layers, bytes)
		}
		if present, _ := layerDirs(t, e.imgDir, infoC.Layers); len(present) > 0 {
			t.Errorf("layers of the removed image C still on disk: %v", present)
		}
		if _, missing := layerDirs(t, e.imgDir, infoA.Layers); len(missing) > 0 {
			t.Errorf("layers of image A (in use) removed: %v", missing)
		}
		// The callback says "in use" for A's layers, not for C's.
		for _, d := range infoA.Layers {
			if !cp.answers[strings.TrimPrefix(d, "sha256:")] {
				t.Errorf("inUse(%s) of image A = false, want true", d)
			}
		}
		for _, d := range infoC.Layers {
			if cp.answers[strings.TrimPrefix(d, "sha256:")] {
				t.Errorf("inUse(%s) of image C = true, want false", d)
			}
		}
		// Once nothing uses B, rm and prune free it.
		if err := e.store.Delete(v1alpha1.KindSandbox, "team", "b"); err != nil {
			t.Fatal(err)
		}
		var sb v1alpha1.Sandbox
		if err := e.store.Get(v1alpha1.KindSandbox, "team", "b", &sb); err == nil {
			sb.Metadata.Finalizers = nil
			if err := e.store.Update(&sb); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.client.RemoveImage(ctx, refB); err != nil {
			t.Fatal(err)
		}
		if _, layers, _, err := e.client.PruneImages(ctx); err != nil || layers != 1 {
			t.Errorf("prune after rm of B: %d layers, %v; want 1", layers, err)
		}
		if _, missing := layerDirs(t, e.imgDir, infoA.Layers); len(missing) > 0 {
			t.Errorf("layers of image A (in use) removed: %v", missing)
		}
	})
}

// fakeImages is an image service whose Pull reports a burst of progress and then
// waits for its context or returns.
type fakeImages struct {
	reports   int
	block     bool
	cancelled chan struct{}
}

func (f *fakeImages) List() ([]images.ImageInfo, error) { return nil, nil }
func (f *fakeImages) Remove(string) error               { return images.ErrImageNotPresent }
func (f *fakeImages) Prune(func(string) bool) (images.PruneResult, error) {
	return images.PruneResult{}, nil
}

func (f *fakeImages) Pull(ctx context.Context, ref string, _ images.PullPolicy, progress func(images.Progress)) (*images.Image, error) {
	const total = 1 << 20
	for i := range f.reports {
		progress(images.Progress{Layer: "sha256:aaaa", Total: total, Done: int64(i+1) * total / int64(f.reports)})
	}
	progress(images.Progress{Layer: "sha256:aaaa", Total: total, Done: total, Complete: true})
	if f.block {
		<-ctx.Done()
		close(f.cancelled)
		return nil, ctx.Err()
	}
	return &images.Image{Ref: ref, Digest: "sha256:bbbb", Size: total}, nil
}

// servePulls serves the API with fake as its image service on a socket in a fresh
// directory and returns a client of it; everything is closed at cleanup.
func servePulls(t *testing.T, fake *fakeImages) *client.Client {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "msbimg") // t.TempDir() can be too long for a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := storetest.Open(t)
	sock := filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: st, Images: fake})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return client.New(sock)
}

// TestImagePullStreamThrottled: a burst of 10000 progress reports reaches the client
// as the first line and the completing one. It runs in a synctest bubble, where the
// clock stands still while goroutines run, so the burst takes no time at all and
// the count is exact (the interval itself is checked in TestPullProgressThrottle).
func TestImagePullStreamThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := servePulls(t, &fakeImages{reports: 10000})
		var lines []v1alpha1.PullProgress
		info, err := c.PullImage(t.Context(), "x:1", "Always", func(p v1alpha1.PullProgress) { lines = append(lines, p) })
		if err != nil {
			t.Fatal(err)
		}
		if info.Ref != "x:1" || info.Digest != "sha256:bbbb" {
			t.Errorf("image %+v", info)
		}
		if len(lines) != 2 || lines[0].Complete || lines[0].Done != 1<<20/10000 || !lines[1].Complete || lines[1].Done != lines[1].Total {
			t.Errorf("progress lines %+v: want exactly the first and the completing one", lines)
		}
	})
}

// TestImagePullClientDisconnect: a client that goes away mid-pull cancels the
// server's pull.
func TestImagePullClientDisconnect(t *testing.T) {
	fake := &fakeImages{reports: 1, block: true, cancelled: make(chan struct{})}
	c := servePulls(t, fake)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.PullImage(ctx, "x:1", "Always", func(p v1alpha1.PullProgress) {
		if p.Complete {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("pull ended with %v, want context.Canceled", err)
	}
	select {
	case <-fake.cancelled:
	case <-time.After(10 * time.Second): // a hang guard, not a timing check
		t.Error("the server's pull was not cancelled when the client went away")
	}
}
