package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/reconciler"
)

// --manifests-dir DIR: msbd keeps the objects of the manifests in DIR
// applied, as the kubelet does with static pod manifests. A file added,
// changed or removed is applied or pruned at once (inotify), and everything
// again at every resync. The objects are ordinary objects applied through
// msbd's own API (the same transaction as msbctl apply), labelled with the
// directory's apply set and annotated with their file, so describe names it
// and a prune touches only what the directory made. A directory with an
// invalid file changes nothing: the problems are a Warning event (msbctl get
// events) until the file is fixed.

// manifestsKind is the kind of the object the directory's events are about.
const manifestsKind = "ManifestsDir"

// manifestsDebounce gathers the inotify events of one edit (an editor writes
// a temporary file and renames it) into one sync.
const manifestsDebounce = 200 * time.Millisecond

type manifestsDir struct {
	dir    string
	set    string // apply set name
	ref    v1alpha1.ObjectReference
	c      *client.Client
	events reconciler.EventSink
	log    *slog.Logger
	resync time.Duration
	last   string // the last problem reported, so a resync does not repeat it in the log
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// newManifestsDir names dir's apply set and event object after its base name
// and a hash of its absolute path: two directories never share a set.
func newManifestsDir(dir string, c *client.Client, events reconciler.EventSink, resync time.Duration, log *slog.Logger) (*manifestsDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(abs))
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-"), "-")
	if len(base) > 30 {
		base = base[:30]
	}
	name := strings.Trim("msbd-"+base, "-") + "-" + hex.EncodeToString(sum[:4])
	return &manifestsDir{
		dir: abs, set: name, c: c, events: events, log: log.With("manifestsDir", abs), resync: resync,
		ref: v1alpha1.ObjectReference{Kind: manifestsKind, Namespace: "default", Name: name},
	}, nil
}

// run syncs at start, after every change inotify reports, and every resync,
// until ctx ends.
func (m *manifestsDir) run(ctx context.Context) {
	changed := make(chan struct{}, 1)
	go m.watch(ctx, changed)
	t := time.NewTicker(m.resync)
	defer t.Stop()
	for {
		m.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			// Let the rest of the edit land, then read it all.
			select {
			case <-ctx.Done():
				return
			case <-time.After(manifestsDebounce):
			}
			select {
			case <-changed:
			default:
			}
		}
	}
}

// watch reports changes under dir on changed. Subdirectories made later are
// watched from the next event on; the resync covers anything missed.
func (m *manifestsDir) watch(ctx context.Context, changed chan<- struct{}) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		m.log.Warn("inotify unavailable; relying on the periodic resync", "err", err)
		return
	}
	defer unix.Close(fd)
	const mask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_MOVED_FROM |
		unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ATTRIB
	watched := map[string]bool{}
	addWatches := func() {
		filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() || watched[p] {
				return nil
			}
			if _, err := unix.InotifyAddWatch(fd, p, mask); err == nil {
				watched[p] = true
			}
			return nil
		})
	}
	addWatches()
	buf := make([]byte, 64<<10)
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 500)
		if err != nil && !errors.Is(err, unix.EINTR) {
			m.log.Warn("inotify", "err", err)
			return
		}
		if n <= 0 {
			if len(watched) == 0 {
				addWatches() // the directory may appear later
			}
			continue
		}
		if _, err := unix.Read(fd, buf); err != nil && !errors.Is(err, unix.EAGAIN) {
			m.log.Warn("inotify read", "err", err)
			return
		}
		// A removed directory's watch is gone; a new one needs adding.
		watched = map[string]bool{}
		addWatches()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}

// sync applies the directory's manifests and prunes what they no longer
// hold; any problem in any file changes nothing.
func (m *manifestsDir) sync(ctx context.Context) {
	objs, err := m.load()
	if err != nil {
		m.warn(err.Error())
		return
	}
	m.last = ""
	if len(objs) > 0 {
		results, err := m.c.Apply(ctx, objs, false)
		if err != nil {
			if ctx.Err() == nil {
				m.warn("applying the manifests: " + err.Error())
			}
			return
		}
		for _, r := range results {
			if r.Action != "unchanged" {
				m.log.Info("manifests dir applied", "object", strings.ToLower(r.Kind)+"/"+r.Name, "namespace", r.Namespace, "action", r.Action)
			}
		}
	}
	m.prune(ctx, objs)
}

// load reads and validates every manifest under dir, labels the objects with
// the set and annotates each with its file. A missing directory is a problem
// (its objects are kept): only an existing, empty one prunes everything.
func (m *manifestsDir) load() ([]v1alpha1.Object, error) {
	if fi, err := os.Stat(m.dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, fmt.Errorf("manifests dir %s: %v; nothing changed", m.dir, err)
	}
	docs, err := v1alpha1.DecodeFiles([]string{m.dir}, true, nil)
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	}
	var objs []v1alpha1.Object
	for _, doc := range docs {
		md := doc.Object.GetMetadata()
		if md.Namespace == "" {
			md.Namespace = "default"
		}
		if err := doc.Validate(); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if cur, ok := md.Labels[v1alpha1.LabelApplySet]; ok && cur != m.set {
			problems = append(problems, fmt.Sprintf("%s:%d: metadata.labels[%s]: %q is not this directory's set %q", doc.Source, doc.Line, v1alpha1.LabelApplySet, cur, m.set))
			continue
		}
		if md.Labels == nil {
			md.Labels = map[string]string{}
		}
		md.Labels[v1alpha1.LabelApplySet] = m.set
		if md.Annotations == nil {
			md.Annotations = map[string]string{}
		}
		md.Annotations[v1alpha1.AnnotationSource] = fmt.Sprintf("%s:%d", doc.Source, doc.Line)
		objs = append(objs, doc.Object)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("invalid manifests in %s; nothing changed: %s", m.dir, strings.Join(problems, "; "))
	}
	return objs, nil
}

// prune deletes the set's objects the manifests no longer hold.
func (m *manifestsDir) prune(ctx context.Context, objs []v1alpha1.Object) {
	keep := map[string]bool{}
	for _, o := range objs {
		md := o.GetMetadata()
		keep[v1alpha1.Key(o.GetTypeMeta().Kind, md.Namespace, md.Name)] = true
	}
	for _, kind := range []string{v1alpha1.KindSandbox, v1alpha1.KindNetworkPolicy, v1alpha1.KindSecret} {
		live, _, err := m.c.List(ctx, kind, "", v1alpha1.LabelApplySet+"="+m.set)
		if err != nil {
			m.log.Warn("listing for prune", "kind", kind, "err", err)
			return
		}
		sort.Slice(live, func(i, j int) bool { return live[i].GetMetadata().Name < live[j].GetMetadata().Name })
		for _, o := range live {
			md := o.GetMetadata()
			if md.Labels[v1alpha1.LabelApplySet] != m.set || keep[v1alpha1.Key(kind, md.Namespace, md.Name)] || md.DeletionTimestamp != nil {
				continue
			}
			if err := m.c.Delete(ctx, kind, md.Namespace, md.Name); err != nil && !client.IsNotFound(err) {
				m.log.Warn("pruning", "object", strings.ToLower(kind)+"/"+md.Name, "err", err)
				continue
			}
			m.log.Info("manifests dir pruned", "object", strings.ToLower(kind)+"/"+md.Name, "namespace", md.Namespace)
		}
	}
}

func (m *manifestsDir) warn(msg string) {
	if msg != m.last {
		m.log.Warn("manifests dir not applied", "problem", msg)
		m.last = msg
	}
	if err := m.events.RecordEvent(m.ref, v1alpha1.EventWarning, "InvalidManifests", msg); err != nil {
		m.log.Warn("recording event", "err", err)
	}
}

// serveManifestsDirs keeps every --manifests-dir applied through the API at
// socket until ctx ends.
func serveManifestsDirs(ctx context.Context, dirs []string, socket string, events reconciler.EventSink, resync time.Duration, log *slog.Logger) error {
	c := client.New(socket)
	var ms []*manifestsDir
	for _, d := range dirs {
		m, err := newManifestsDir(d, c, events, resync, log)
		if err != nil {
			return fmt.Errorf("--manifests-dir %s: %w", d, err)
		}
		ms = append(ms, m)
	}
	for _, m := range ms {
		log.Info("keeping a manifests dir applied", "dir", m.dir, "applyset", m.set)
		go m.run(ctx)
	}
	return nil
}
