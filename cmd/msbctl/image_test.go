package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
	"msb.dev/msb/images"
	"msb.dev/msb/images/imagetest"
	"msb.dev/msb/store/storetest"
)

func fixtureImages() []v1alpha1.ImageInfo {
	return []v1alpha1.ImageInfo{
		{
			Ref: "127.0.0.1:5000/team/tool@sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567", Name: "127.0.0.1:5000/team/tool@sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567",
			Digest: "sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567", Size: 812,
			Layers: []string{"sha256:1111111111111111111111111111111111111111111111111111111111111111"}, Pulled: *ago(45 * time.Second),
		},
		{
			Ref: "oci-archive:/srv/images/agent.tar", Name: "oci-archive:/srv/images/agent.tar",
			Digest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", Size: 1536 << 20,
			Layers: []string{"sha256:2222222222222222222222222222222222222222222222222222222222222222"}, Pulled: *ago(26 * time.Hour),
		},
		{
			Ref: "python:3.12-slim", Name: "index.docker.io/library/python:3.12-slim",
			Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 4404019,
			Layers:  []string{"sha256:3333333333333333333333333333333333333333333333333333333333333333", "sha256:4444444444444444444444444444444444444444444444444444444444444444"},
			Created: *ago(30 * 24 * time.Hour), Pulled: *ago(3*time.Hour + 5*time.Minute), InUse: 2,
		},
	}
}

func TestImageTable(t *testing.T) {
	var b strings.Builder
	if err := printImages(&b, outTable, fixtureImages()); err != nil {
		t.Fatal(err)
	}
	golden(t, "image-ls", b.String())

	b.Reset()
	if err := printImages(&b, outName, fixtureImages()); err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1:5000/team/tool@sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567\noci-archive:/srv/images/agent.tar\npython:3.12-slim\n"; b.String() != want {
		t.Errorf("-o name:\n%s", b.String())
	}
	for _, format := range []string{outJSON, outYAML} {
		b.Reset()
		if err := printImages(&b, format, fixtureImages()); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"items", "inUse", "python:3.12-slim", "index.docker.io/library/python:3.12-slim", "sha256:4444"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("-o %s lacks %q:\n%s", format, want, b.String())
			}
		}
	}
	b.Reset()
	printImages(&b, outJSON, nil)
	if got := strings.Join(strings.Fields(b.String()), ""); got != `{"items":[]}` {
		t.Errorf("-o json of nothing: %s", got)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0B", 1023: "1023B", 1024: "1.0KiB", 1536: "1.5KiB", 4404019: "4.2MiB",
		1<<20 - 1: "1.0MiB", 40 << 30: "40.0GiB", 12897484: "12.3MiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestProgressBars(t *testing.T) {
	const layer = "sha256:abcd1234abcd1234abcd1234abcd1234abcd1234abcd1234abcd1234abcd1234"
	tests := []struct {
		s    barState
		want string
	}{
		{barState{p: v1alpha1.PullProgress{Layer: layer, Total: 40 << 20}}, "sha256:abcd1234abcd  [                              ]  0B/40.0MiB"},
		{barState{p: v1alpha1.PullProgress{Layer: layer, Done: 10 << 20, Total: 40 << 20}}, "sha256:abcd1234abcd  [======>                       ]  10.0MiB/40.0MiB"},
		{barState{p: v1alpha1.PullProgress{Layer: layer, Done: 40 << 20, Total: 40 << 20, Complete: true}}, "sha256:abcd1234abcd  [==============================]  40.0MiB/40.0MiB  done"},
		{barState{p: v1alpha1.PullProgress{Layer: layer, Done: 5, Total: 5, Complete: true}, cached: true}, "sha256:abcd1234abcd  already present"},
	}
	for _, tt := range tests {
		if got := barLine(layer, tt.s); got != tt.want {
			t.Errorf("barLine(%+v) =\n%q, want\n%q", tt.s, got, tt.want)
		}
	}

	// Bars are redrawn in place: the cursor goes back up over the lines drawn.
	var b bytes.Buffer
	d := &barDisplay{w: &b}
	d.update(v1alpha1.PullProgress{Layer: "sha256:aaaa", Total: 100})
	d.update(v1alpha1.PullProgress{Layer: "sha256:bbbb", Total: 100})
	d.update(v1alpha1.PullProgress{Layer: "sha256:aaaa", Done: 100, Total: 100, Complete: true})
	d.finish()
	out := b.String()
	if strings.Count(out, "\x1b[1A") != 1 || strings.Count(out, "\x1b[2A") != 2 || !strings.HasSuffix(out, "sha256:bbbb  [                              ]  0B/100B\n") {
		t.Errorf("redraws:\n%q", out)
	}
}

// newImageServer is newServer with a real image store, and a registry on loopback
// holding the images pushed with push.
func newImageServer(t *testing.T) (sock string, c *client.Client, push func(repoTag string, img v1.Image) string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root: unpacking image layers keeps their owners (chown)")
	}
	dir, err := os.MkdirTemp("/tmp", "msbctl-img-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := storetest.Open(t)
	imgs, err := images.New(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	reg := imagetest.NewRegistry(t)

	sock = filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: st, Runtime: notRunning{}, Images: imgs})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	push = func(repoTag string, img v1.Image) string {
		t.Helper()
		ref, _ := reg.Push(t, repoTag, img)
		return ref
	}
	return sock, client.New(sock), push
}

func randomImage(t *testing.T, layers int) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for range layers {
		body := make([]byte, 32<<10)
		rand.Read(body)
		l, err := imagetest.Layer(imagetest.File("data", 0o644, string(body)))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := imagetest.Image(v1.Config{}, ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImageCommands(t *testing.T) {
	sock, c, push := newImageServer(t)
	imgA := randomImage(t, 2)
	refA := push("team/a:1", imgA)
	refB := push("team/b:1", randomImage(t, 1))
	digestA, _ := imgA.Digest()

	t.Run("pull", func(t *testing.T) {
		code, out, errs := cli(t, sock, "image", "pull", refA)
		if want := "Pulled " + refA + " (" + digestA.String() + ")\n"; code != exitOK || out != want {
			t.Fatalf("image pull: exit %d, %q %s; want %q", code, out, errs, want)
		}
		// Not a terminal: plain lines, a start and an end per layer.
		if strings.Count(errs, ": downloading ") != 2 || strings.Count(errs, ": done\n") != 2 || strings.Contains(errs, "\x1b[") {
			t.Errorf("progress lines:\n%s", errs)
		}
		code, _, errs = cli(t, sock, "image", "pull", refA, "--policy", "IfNotPresent")
		if code != exitOK || strings.Count(errs, ": already present\n") != 2 {
			t.Errorf("image pull of a held image: exit %d\n%s", code, errs)
		}
		// On a terminal: bars redrawn in place.
		saved := isTerminal
		isTerminal = func(io.Writer) bool { return true }
		defer func() { isTerminal = saved }()
		code, _, errs = cli(t, sock, "image", "pull", refB)
		if code != exitOK || !strings.Contains(errs, "\x1b[1A") || !strings.Contains(errs, "[==============================]") || !strings.Contains(errs, "  done\n") {
			t.Errorf("image pull on a terminal: exit %d\n%q", code, errs)
		}
	})

	t.Run("pull errors", func(t *testing.T) {
		missing := strings.Split(refA, "/")[0] + "/team/missing:1"
		code, out, errs := cli(t, sock, "image", "pull", missing)
		if code != exitFail || out != "" || !strings.HasPrefix(errs, "Error: ") || !strings.Contains(errs, "missing") {
			t.Errorf("pull of a missing image: exit %d, %q %q", code, out, errs)
		}
		code, _, errs = cli(t, sock, "image", "pull", missing, "--policy", "Never")
		if code != exitFail || !strings.Contains(errs, "Never") {
			t.Errorf("pull --policy Never of a missing image: exit %d, %q", code, errs)
		}
		code, _, errs = cli(t, sock, "image", "pull", refA, "--policy", "Sometimes")
		if code != exitUsage || !strings.Contains(errs, "unknown --policy") {
			t.Errorf("pull --policy Sometimes: exit %d, %q", code, errs)
		}
		code, _, errs = cli(t, sock, "image", "ls", "--policy", "Always")
		if code != exitUsage || !strings.Contains(errs, "--policy is a flag of image pull") {
			t.Errorf("ls --policy: exit %d, %q", code, errs)
		}
		code, _, errs = cli(t, sock, "image", "frobnicate")
		if code != exitUsage || !strings.Contains(errs, `unknown subcommand "frobnicate"`) {
			t.Errorf("unknown subcommand: exit %d, %q", code, errs)
		}
	})

	sb := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: "a", Namespace: "default"},
		Spec:     v1alpha1.SandboxSpec{Image: refA},
	}
	if _, err := c.Create(context.Background(), sb); err != nil {
		t.Fatal(err)
	}

	t.Run("ls", func(t *testing.T) {
		code, out, errs := cli(t, sock, "image", "ls")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != exitOK || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "REF DIGEST SIZE IN-USE AGE" {
			t.Fatalf("image ls: exit %d, %q %s", code, out, errs)
		}
		if f := strings.Fields(lines[1]); f[0] != refA || f[1] != "sha256:"+digestA.Hex[:12] || !strings.HasSuffix(f[2], "KiB") || f[3] != "1" {
			t.Errorf("image ls row of A: %q", lines[1])
		}
		if f := strings.Fields(lines[2]); f[0] != refB || f[3] != "0" {
			t.Errorf("image ls row of B: %q", lines[2])
		}
		code, out, _ = cli(t, sock, "images", "-o", "json")
		var doc struct{ Items []v1alpha1.ImageInfo }
		if err := json.Unmarshal([]byte(out), &doc); code != exitOK || err != nil || len(doc.Items) != 2 || doc.Items[0].InUse != 1 || len(doc.Items[0].Layers) != 2 {
			t.Errorf("images -o json: exit %d, %v\n%s", code, err, out)
		}
	})

	t.Run("rm", func(t *testing.T) {
		code, out, errs := cli(t, sock, "image", "rm", refA, refB)
		if code != exitFail || out != "Removed "+refB+"\n" || !strings.Contains(errs, "Error: image \""+refA+"\" is used by sandbox default/a; delete the sandbox first") {
			t.Errorf("image rm: exit %d, %q %q", code, out, errs)
		}
		code, _, errs = cli(t, sock, "image", "rm", refB)
		if code != exitFail || !strings.Contains(errs, "not found") {
			t.Errorf("image rm of a removed image: exit %d, %q", code, errs)
		}
	})

	t.Run("prune", func(t *testing.T) {
		code, out, errs := cli(t, sock, "image", "prune")
		if code != exitOK || !strings.HasPrefix(out, "Pruned 1 layers, ") || !strings.Contains(out, "blobs, freed ") {
			t.Errorf("image prune: exit %d, %q %s", code, out, errs)
		}
		code, out, _ = cli(t, sock, "image", "prune")
		if code != exitOK || out != "Pruned 0 layers, 0 blobs, freed 0B\n" {
			t.Errorf("second prune: exit %d, %q", code, out)
		}
		// A's layers are still there: pulling it with Never works.
		code, _, errs = cli(t, sock, "image", "pull", refA, "--policy", "Never")
		if code != exitOK {
			t.Errorf("pull --policy Never of the image in use after prune: exit %d, %s", code, errs)
		}
	})
}
