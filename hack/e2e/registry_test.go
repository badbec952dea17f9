package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"msb.dev/msb/images/imagetest"
)

// testRegistry is imagetest's registry on loopback, for the end-to-end image
// tests; it can hold blob downloads until the test lets them go.
type testRegistry struct{ *imagetest.Registry }

// newRegistry serves the registry inside network namespace ns (the one
// msbd runs in: d.netns) on its loopback; the test pushes to it from there.
func newRegistry(t testing.TB, ns string) *testRegistry {
	t.Helper()
	var ln net.Listener
	var err error
	inNetns(t, ns, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	return &testRegistry{imagetest.NewRegistryOn(t, ln, &http.Transport{DialContext: netnsDialer(ns)})}
}

// holdBlobs makes every later blob GET wait until release is called (release is
// also called at cleanup, so the server can close). A held pull stays in
// progress for as long as the test needs, without guessing a delay.
func (r *testRegistry) holdBlobs(t testing.TB) (release func()) {
	gate := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	r.Intercept(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			<-gate
		}
		return false
	})
	return release
}

// blobGETs is the number of blob downloads since the last push.
func (r *testRegistry) blobGETs() int { return r.Requests("GET ", "/blobs/sha256:") }

// maxPerBlob is the most downloads of any one blob since the last push.
func (r *testRegistry) maxPerBlob() int {
	m := 0
	for k, n := range r.Counts() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/sha256:") {
			m = max(m, n)
		}
	}
	return m
}

// layeredBusybox is busybox plus n small layers with unique content.
func layeredBusybox(t testing.TB, n int, salt string) v1.Image {
	img, err := imagetest.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		l, err := imagetest.Layer(imagetest.Dir("data/", 0o755), imagetest.File(fmt.Sprintf("data/layer%d", i), 0o644, strings.Repeat(salt, 1000)+fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, l)
		if err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func registrySandbox(name, image, extra string) string {
	return strings.Replace(sandboxYAML(name, extra, "sleep", "1000"), "oci:"+imageDir+":latest", image, 1)
}

// TestRegistryPullsAndCache: the first sandbox of an image downloads it, the
// second downloads nothing and shares the unpacked layers; digests are
// recorded and pinning works; image ls/prune keep what is in use.
func TestRegistryPullsAndCache(t *testing.T) {
	d := startDaemon(t)
	reg := newRegistry(t, d.netns)
	ref, digest := reg.Push(t, "team/tool:v1", layeredBusybox(t, 4, "a"))

	d.apply(registrySandbox("r1", ref, ""))
	d.must("wait", "sandbox/r1", "--for=condition=Ready", "--timeout=60s")
	if got := field(d.sandbox("r1"), "status.imageDigest"); got != digest {
		t.Fatalf("status.imageDigest = %v, want %s", got, digest)
	}
	first := reg.blobGETs()
	if first == 0 {
		t.Fatal("no blob was downloaded for the first sandbox")
	}
	layersBefore := countDirs(t, filepath.Join(d.stateDir, "images", "layers"))

	// Second sandbox of the same image: no download, no new layer.
	d.apply(registrySandbox("r2", ref, ""))
	d.must("wait", "sandbox/r2", "--for=condition=Ready", "--timeout=60s")
	if n := reg.blobGETs(); n != first {
		t.Errorf("second sandbox of a cached image made %d blob requests", n-first)
	}
	if n := countDirs(t, filepath.Join(d.stateDir, "images", "layers")); n != layersBefore {
		t.Errorf("second sandbox unpacked layers again: %d dirs, was %d", n, layersBefore)
	}
	lower1, lower2 := lowerdirs(t, d, "r1"), lowerdirs(t, d, "r2")
	if lower1 == "" || lower1 != lower2 {
		t.Errorf("sandboxes do not share image layers:\n r1 %s\n r2 %s", lower1, lower2)
	}

	// The tag moves, in the registry and in the cache: r1 and r2 still run
	// the old digest, which no image reference names any more; prune must
	// keep its layers anyway.
	reg.Push(t, "team/tool:v1", layeredBusybox(t, 4, "b"))
	d.must("image", "pull", ref)
	if got := field(d.sandbox("r1"), "status.imageDigest"); got != digest {
		t.Errorf("a moved tag changed r1's imageDigest to %v", got)
	}
	d.must("image", "prune")
	for _, l := range strings.Split(strings.TrimPrefix(lower1, "lowerdir="), ":") {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("prune removed layer %s that r1 is mounted on: %v", l, err)
		}
	}

	// Digest pinning: still the old manifest after the tag moved.
	repo := strings.TrimSuffix(ref, ":v1")
	d.apply(registrySandbox("pinned", repo+"@"+digest, "  imagePullPolicy: Always\n"))
	d.must("wait", "sandbox/pinned", "--for=condition=Ready", "--timeout=60s")
	if got := field(d.sandbox("pinned"), "status.imageDigest"); got != digest {
		t.Errorf("pinned sandbox runs %v, want %s", got, digest)
	}

	// image ls shows the reference as written and how many sandboxes use it.
	ls := d.must("image", "ls")
	if !strings.Contains(ls, ref) || !strings.Contains(ls, strings.TrimPrefix(digest, "sha256:")[:12]) {
		t.Errorf("image ls lacks %s / its digest:\n%s", ref, ls)
	}

	// An unused image is pruned; layers in use are kept and sandboxes run on.
	other, _ := reg.Push(t, "team/other:v1", layeredBusybox(t, 1, "z"))
	d.must("image", "pull", other)
	d.must("image", "rm", other)
	d.must("image", "prune")
	for _, l := range strings.Split(strings.TrimPrefix(lower1, "lowerdir="), ":") {
		if _, err := os.Stat(l); err != nil {
			t.Errorf("prune removed layer %s that r1 is mounted on: %v", l, err)
		}
	}
	if got := d.must("exec", "r1", "--", "cat", "/data/layer3"); !strings.HasPrefix(got, "aaa") {
		t.Errorf("sandbox lost its layers after prune: %q", got)
	}
	if _, _, code := d.ctl("image", "rm", ref); code == 0 {
		t.Errorf("image rm of an image in use succeeded")
	}
}

// TestRegistryPullPolicyAndFailures covers Never, a missing image, a hostile
// image and the Pulling state of a slow pull, and concurrent pulls.
func TestRegistryPullPolicyAndFailures(t *testing.T) {
	d := startDaemon(t)
	reg := newRegistry(t, d.netns)

	d.apply(registrySandbox("never", reg.Host+"/nothing/here:v1", "  imagePullPolicy: Never\n"))
	d.apply(registrySandbox("missing", reg.Host+"/nothing/here:v1", ""))
	for name, want := range map[string]string{"never": "Never", "missing": "UNKNOWN"} {
		var msg string
		waitFor(t, 30*time.Second, name+" ImageReady=PullFailed", func() bool {
			var reason string
			_, reason, msg = condition(d.sandbox(name), "ImageReady")
			return reason == "PullFailed"
		})
		if !strings.Contains(strings.ToUpper(msg), strings.ToUpper(want)) {
			t.Errorf("%s: message %q lacks %q", name, msg, want)
		}
	}

	// Every hostile image, pulled from the registry, is refused and names
	// the entry; the host stays untouched.
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "victim"), []byte("original"), 0o644)
	cases := imagetest.HostileCases(host)
	var docs []string
	for i, c := range cases {
		img, err := imagetest.ImageOf(c.Entries...)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := reg.Push(t, fmt.Sprintf("evil/case%d:v1", i), img)
		docs = append(docs, registrySandbox(fmt.Sprintf("evil%d", i), ref, ""))
	}
	d.apply(strings.Join(docs, "---\n"))
	for i, c := range cases {
		var msg string
		waitFor(t, 30*time.Second, c.Name+" refused", func() bool {
			var reason string
			_, reason, msg = condition(d.sandbox(fmt.Sprintf("evil%d", i)), "ImageReady")
			return reason == "InvalidImage"
		})
		if !strings.Contains(msg, c.Entry) {
			t.Errorf("%s: message %q does not name entry %q", c.Name, msg, c.Entry)
		}
	}
	if ents, _ := os.ReadDir(host); len(ents) != 1 {
		t.Errorf("hostile images wrote to the host: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "victim")); string(b) != "original" {
		t.Errorf("victim changed: %q", b)
	}

	// A pull in progress shows ImageReady Unknown/Pulling and holds no reconcile
	// worker; six sandboxes of one new image download each blob once. The
	// registry holds the blob downloads, so the pulls stay in progress until
	// the test has seen what it needs.
	ref, _ := reg.Push(t, "slow/image:v1", layeredBusybox(t, 2, "s"))
	release := reg.holdBlobs(t)
	// More sandboxes of the held image than msbd has reconcile workers, and
	// one of a cached image last: pulls must not hold the workers, so it
	// starts while the others still pull.
	slowOnes := []string{"s1", "s2", "s3", "s4", "s5", "s6"}
	var slowDocs []string
	for _, n := range slowOnes {
		slowDocs = append(slowDocs, registrySandbox(n, ref, ""))
	}
	d.apply(strings.Join(append(slowDocs, sandboxYAML("fast", "", "sleep", "1000")), "---\n"))
	d.must("wait", "sandbox/fast", "--for=condition=Ready", "--timeout=60s")
	for _, n := range slowOnes {
		waitFor(t, 30*time.Second, n+" ImageReady Unknown/Pulling", func() bool {
			st, reason, _ := condition(d.sandbox(n), "ImageReady")
			return st == "Unknown" && reason == "Pulling"
		})
	}
	release()
	for _, n := range slowOnes {
		d.must("wait", "sandbox/"+n, "--for=condition=Ready", "--timeout=60s")
	}
	if m := reg.maxPerBlob(); m != 1 {
		t.Errorf("a blob was downloaded %d times by concurrent pulls", m)
	}
}

func countDirs(t *testing.T, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

// lowerdirs returns the overlay lowerdir option of a sandbox's rootfs mount.
// lowerdirs are the image layer directories sandbox name's overlay stacks
// ("lowerdir=A:B:..."), as its driver recorded them: the overlay itself
// names the per-sandbox idmapped clones of those directories.
func lowerdirs(t *testing.T, d *daemon, name string) string {
	uid := field(d.sandbox(name), "metadata.uid").(string)
	b, err := os.ReadFile(filepath.Join(d.stateDir, "sandboxes", uid, "spec.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct{ Layers []string }
	if err := json.Unmarshal(b, &spec); err != nil || len(spec.Layers) == 0 {
		t.Fatalf("%s's spec.json: %v %s", name, err, b)
	}
	return "lowerdir=" + strings.Join(spec.Layers, ":")
}

// TestImageConfigHonoured: entrypoint, cmd, env, workingDir and user come from
// the image; command/args/env/workingDir in the Sandbox override them the way
// Kubernetes does.
func TestImageConfigHonoured(t *testing.T) {
	d := startDaemon(t)
	reg := newRegistry(t, d.netns)
	base, err := imagetest.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Entrypoint = []string{"sh", "-c"}
	cfg.Cmd = []string{`echo "img-cmd FOO=$FOO uid=$(id -u) gid=$(id -g) pwd=$(pwd)"; exec sleep 1000`}
	cfg.Env = append(cfg.Env, "FOO=from-image")
	cfg.WorkingDir = "/srv"
	cfg.User = "1000:1000"
	img, err := mutate.Config(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := imagetest.Layer(imagetest.Dir("srv/", 0o755).Owned(1000, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, extra); err != nil {
		t.Fatal(err)
	}
	ref, _ := reg.Push(t, "cfg/image:v1", img)

	// No overrides: everything from the image.
	d.apply(strings.Replace(registrySandbox("plain", ref, ""), "  command: [\"sleep\", \"1000\"]\n", "", 1))
	d.must("wait", "sandbox/plain", "--for=condition=Ready", "--timeout=60s")
	// args replace cmd (entrypoint kept); env and workingDir override.
	d.apply(strings.Replace(registrySandbox("over", ref, `  args: ['echo "override FOO=$FOO pwd=$(pwd)"; exec sleep 1000']
  env: [{name: FOO, value: from-spec}]
  workingDir: /tmp
`), "  command: [\"sleep\", \"1000\"]\n", "", 1))
	d.must("wait", "sandbox/over", "--for=condition=Ready", "--timeout=60s")
	want := map[string]string{
		"plain": "img-cmd FOO=from-image uid=1000 gid=1000 pwd=/srv",
		"over":  "override FOO=from-spec pwd=/tmp",
	}
	for name, w := range want {
		var out string
		waitFor(t, 10*time.Second, name+" log with "+w, func() bool {
			out, _, _ = d.ctl("logs", name)
			if !strings.Contains(out, w) {
				t.Logf("%s log: %q", name, out)
			}
			return strings.Contains(out, w)
		})
	}
	// exec runs as the image's user too.
	if got := d.must("exec", "over", "--", "id", "-u"); got != "1000\n" {
		t.Errorf("exec id -u = %q, want the image user 1000", got)
	}
}
