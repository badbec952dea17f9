package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
)

// ImageService is what the image routes need from the image store (implemented
// by *images.Store).
type ImageService interface {
	List() ([]images.ImageInfo, error)
	Pull(ctx context.Context, ref string, policy images.PullPolicy, progress func(images.Progress)) (*images.Image, error)
	Remove(ref string) error
	Prune(inUse func(layerDir string) bool) (images.PruneResult, error)
}

var _ ImageService = (*images.Store)(nil)

// imageInfo is one image as the API shows it.
type imageInfo struct {
	Ref     string    `json:"ref"`
	Name    string    `json:"name"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Layers  []string  `json:"layers"`
	Created time.Time `json:"created"`
	Pulled  time.Time `json:"pulled"`
	InUse   int       `json:"inUse"`
}

type imageList struct {
	Items []imageInfo `json:"items"`
}

// pullRequest is the body of POST .../images/pull.
type pullRequest struct {
	Ref    string `json:"ref"`
	Policy string `json:"policy,omitempty"`
}

// pullProgress is a progress line of a pull stream.
type pullProgress struct {
	Layer    string `json:"layer"`
	Total    int64  `json:"total"`
	Done     int64  `json:"done"`
	Complete bool   `json:"complete"`
}

// pullError is the final line of a failed pull.
type pullError struct {
	Reason  string `json:"reason"` // PullFailed | InvalidImage | NotPresent
	Message string `json:"message"`
}

// pullLine is one line of a pull stream: exactly one field is set.
type pullLine struct {
	Progress *pullProgress `json:"progress,omitempty"`
	Image    *imageInfo    `json:"image,omitempty"`
	Error    *pullError    `json:"error,omitempty"`
}

type pruneResponse struct {
	Blobs  int   `json:"blobs"`
	Layers int   `json:"layers"`
	Bytes  int64 `json:"bytes"`
}

// pullProgressInterval is the least time between two progress lines of one layer.
const pullProgressInterval = 100 * time.Millisecond

func (s *server) imageService() (ImageService, error) {
	if s.images == nil {
		return nil, &apiError{code: http.StatusServiceUnavailable, reason: "ServiceUnavailable",
			msg: "this msbd serves no image store: image commands are not available"}
	}
	return s.images, nil
}

// imageUsers maps every image to the sandboxes (namespace/name, sorted) that use
// it: those whose status.imageDigest is the image's digest or whose spec.image is
// its reference as written. Sandboxes being deleted count.
func (s *server) imageUsers(infos []images.ImageInfo) ([][]string, error) {
	objs, _, err := s.store.List(v1alpha1.KindSandbox, "")
	if err != nil {
		return nil, storeError(err, "sandboxes", "", "")
	}
	users := make([][]string, len(infos))
	for _, o := range objs {
		sb, ok := o.(*v1alpha1.Sandbox)
		if !ok {
			continue
		}
		for i, info := range infos {
			if usesImage(sb, info) {
				users[i] = append(users[i], sb.Metadata.Namespace+"/"+sb.Metadata.Name)
			}
		}
	}
	return users, nil
}

func usesImage(sb *v1alpha1.Sandbox, info images.ImageInfo) bool {
	return (info.Digest != "" && sb.Status.ImageDigest == info.Digest) ||
		(info.Ref != "" && sb.Spec.Image == info.Ref)
}

func toImageInfo(info images.ImageInfo, inUse int) imageInfo {
	layers := info.Layers
	if layers == nil {
		layers = []string{}
	}
	return imageInfo{Ref: info.Ref, Name: info.Name, Digest: info.Digest, Size: info.Size,
		Layers: layers, Created: info.Created, Pulled: info.Pulled, InUse: inUse}
}

// listImages answers GET .../images.
func (s *server) listImages(w http.ResponseWriter, r *http.Request) error {
	is, err := s.imageService()
	if err != nil {
		return err
	}
	infos, err := is.List()
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	users, err := s.imageUsers(infos)
	if err != nil {
		return err
	}
	out := imageList{Items: make([]imageInfo, len(infos))}
	for i, info := range infos {
		out.Items[i] = toImageInfo(info, len(users[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pullImage answers POST .../images/pull with a stream of newline-delimited JSON:
// progress lines, then one line with the image or the error. The pull ends when the
// client goes away.
func (s *server) pullImage(w http.ResponseWriter, r *http.Request) error {
	is, err := s.imageService()
	if err != nil {
		return err
	}
	var req pullRequest
	if err := decodeStrict(http.MaxBytesReader(w, r.Body, maxBodyBytes), &req); err != nil {
		return badRequest("malformed pull request: %v", err)
	}
	if strings.TrimSpace(req.Ref) == "" {
		return badRequest("pull request without an image reference: set \"ref\"")
	}
	policy := images.PullPolicy(req.Policy)
	switch policy {
	case "":
		policy = images.PullIfNotPresent
	case images.PullAlways, images.PullIfNotPresent, images.PullNever:
	default:
		return badRequest("unknown pull policy %q: use Always, IfNotPresent or Never", req.Policy)
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	st := &pullStream{w: w, rc: http.NewResponseController(w), cancel: cancel, last: map[string]time.Time{}}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if err := st.rc.Flush(); err != nil {
		return nil
	}

	img, err := is.Pull(ctx, req.Ref, policy, st.progress)
	st.finish()
	if err != nil {
		if ctx.Err() != nil {
			s.log.Debug("image pull ended by the client", "image", req.Ref, "err", err)
			return nil
		}
		pe := &pullError{Reason: "PullFailed", Message: err.Error()}
		var inv *images.InvalidImageError
		switch {
		case errors.As(err, &inv):
			pe.Reason = "InvalidImage"
		case errors.Is(err, images.ErrImageNotPresent):
			pe.Reason = "NotPresent"
		}
		s.log.Info("image pull failed", "image", req.Ref, "reason", pe.Reason, "err", err)
		st.write(pullLine{Error: pe})
		return nil
	}
	info := s.pulledInfo(is, img)
	s.log.Info("image pulled", "image", req.Ref, "digest", img.Digest)
	st.write(pullLine{Image: &info})
	return nil
}

// pulledInfo describes an image just pulled: its List entry where there is one.
func (s *server) pulledInfo(is ImageService, img *images.Image) imageInfo {
	base := images.ImageInfo{Ref: img.Ref, Digest: img.Digest, Size: img.Size}
	if infos, err := is.List(); err == nil {
		for _, info := range infos {
			if info.Ref == img.Ref {
				base = info
				break
			}
		}
	}
	n := 0
	if users, err := s.imageUsers([]images.ImageInfo{base}); err == nil {
		n = len(users[0])
	}
	return toImageInfo(base, n)
}

// pullStream writes the lines of one pull stream. Progress may be reported from
// other goroutines than the handler's; lines never interleave, and none is written
// once the stream is finished.
type pullStream struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	cancel context.CancelFunc

	mu       sync.Mutex
	finished bool
	broken   bool
	last     map[string]time.Time // last progress line per layer
}

// progress writes a progress line, at most one per layer every
// pullProgressInterval (first and completing reports always pass).
func (st *pullStream) progress(p images.Progress) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finished || st.broken {
		return
	}
	t := time.Now()
	if last, seen := st.last[p.Layer]; seen && !p.Complete && t.Sub(last) < pullProgressInterval {
		return
	}
	st.last[p.Layer] = t
	st.writeLocked(pullLine{Progress: &pullProgress{Layer: p.Layer, Total: p.Total, Done: p.Done, Complete: p.Complete}})
}

// finish drops progress reported from now on.
func (st *pullStream) finish() {
	st.mu.Lock()
	st.finished = true
	st.mu.Unlock()
}

func (st *pullStream) write(l pullLine) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.writeLocked(l)
}

func (st *pullStream) writeLocked(l pullLine) {
	if st.broken {
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(l); err != nil {
		return
	}
	if _, err := st.w.Write(buf.Bytes()); err == nil {
		err = st.rc.Flush()
		if err == nil {
			return
		}
	}
	// The client is gone: stop the pull.
	st.broken = true
	st.cancel()
}

// removeImage answers DELETE .../images?ref=REF. An image a Sandbox uses is not
// removed.
func (s *server) removeImage(w http.ResponseWriter, r *http.Request) error {
	is, err := s.imageService()
	if err != nil {
		return err
	}
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		return badRequest("say which image to remove: ?ref=REF")
	}
	infos, err := is.List()
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	matched := matchImages(infos, ref)
	if len(matched) == 0 {
		return notFound("image %q not found: see msbctl image ls", ref)
	}
	users, err := s.imageUsers(matched)
	if err != nil {
		return err
	}
	for i, u := range users {
		if len(u) == 0 {
			continue
		}
		what := fmt.Sprintf("image %q", ref)
		if matched[i].Ref != ref {
			what = fmt.Sprintf("image %q (%s)", ref, matched[i].Ref)
		}
		return &apiError{code: http.StatusConflict, reason: "Conflict",
			msg: fmt.Sprintf("%s is used by %s; delete the sandbox first", what, sandboxList(u))}
	}
	if err := is.Remove(ref); err != nil {
		if errors.Is(err, images.ErrImageNotPresent) {
			return notFound("image %q not found: see msbctl image ls", ref)
		}
		return fmt.Errorf("removing image %q: %w", ref, err)
	}
	s.log.Info("image removed", "image", ref)
	writeJSON(w, http.StatusOK, (&apiError{code: http.StatusOK, msg: fmt.Sprintf("image %q removed", ref)}).status())
	return nil
}

// sandboxList names sandboxes for a message: "sandbox default/a", or
// "sandboxes default/a, default/b and 3 more".
func sandboxList(names []string) string {
	if len(names) == 1 {
		return "sandbox " + names[0]
	}
	const show = 3
	if len(names) <= show {
		return "sandboxes " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("sandboxes %s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// matchImages returns the images Remove(ref) forgets, by its rules: the reference as
// written, else those with that manifest digest, else those with that canonical name.
func matchImages(infos []images.ImageInfo, ref string) []images.ImageInfo {
	for _, info := range infos {
		if info.Ref == ref {
			return []images.ImageInfo{info}
		}
	}
	var match func(images.ImageInfo) bool
	if strings.HasPrefix(ref, "sha256:") {
		match = func(info images.ImageInfo) bool { return info.Digest == ref }
	} else if n, err := name.ParseReference(strings.TrimPrefix(ref, "docker://")); err == nil {
		match = func(info images.ImageInfo) bool { return info.Name == n.Name() }
	} else {
		return nil
	}
	var out []images.ImageInfo
	for _, info := range infos {
		if match(info) {
			out = append(out, info)
		}
	}
	return out
}

// LayerUser is implemented by a Runtime that knows which image layer
// directories its sandboxes use.
type LayerUser interface {
	LayersInUse(ctx context.Context) (map[string]bool, error)
}

// pruneImages answers POST .../images/prune: it removes the blobs and layers that
// no recorded image uses, never a layer of an image a Sandbox uses.
func (s *server) pruneImages(w http.ResponseWriter, r *http.Request) error {
	is, err := s.imageService()
	if err != nil {
		return err
	}
	infos, err := is.List()
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	users, err := s.imageUsers(infos)
	if err != nil {
		return err
	}
	keep := map[string]bool{} // diffID hex of every layer in use
	for i, info := range infos {
		if len(users[i]) == 0 {
			continue
		}
		for _, d := range info.Layers {
			keep[strings.TrimPrefix(d, "sha256:")] = true
		}
	}
	// What sandboxes actually mount (or will on resume), whatever the image
	// references say now: a tag may have moved since a sandbox started.
	var mounted map[string]bool
	if lu, ok := s.rt.(LayerUser); ok {
		if mounted, err = lu.LayersInUse(r.Context()); err != nil {
			return fmt.Errorf("listing layers in use: %w", err)
		}
	}
	res, err := is.Prune(func(layerDir string) bool {
		return keep[filepath.Base(layerDir)] || mounted[filepath.Clean(layerDir)]
	})
	if err != nil {
		return fmt.Errorf("pruning images: %w", err)
	}
	s.log.Info("images pruned", "blobs", res.Blobs, "layers", res.Layers, "bytes", res.Bytes)
	writeJSON(w, http.StatusOK, pruneResponse{Blobs: res.Blobs, Layers: res.Layers, Bytes: res.Bytes})
	return nil
}
