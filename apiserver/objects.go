package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// kindFor returns the kind whose API path segment is plural.
func kindFor(plural string) (v1alpha1.KindInfo, error) {
	for _, k := range v1alpha1.Kinds {
		if k.Plural == plural {
			return k, nil
		}
	}
	return v1alpha1.KindInfo{}, notFound("the server has no resource type %q", plural)
}

// writable reports whether clients may write objects of kind ki; events are
// written by msbd alone.
func writable(ki v1alpha1.KindInfo) error {
	if ki.Kind == v1alpha1.KindEvent {
		return &apiError{code: http.StatusMethodNotAllowed, reason: "MethodNotAllowed",
			msg: "events are written by msbd and are read-only"}
	}
	return nil
}

// decodeStrict decodes exactly one JSON value from r into v, rejecting unknown
// fields and trailing data.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", mbe.Limit)
		}
		if errors.Is(err, io.EOF) {
			return errors.New("empty request body")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// readObject decodes the request body as an object of kind ki addressed by
// the path's namespace (and name, when the path has one).
func readObject(w http.ResponseWriter, r *http.Request, ki v1alpha1.KindInfo, ns, name string) (v1alpha1.Object, error) {
	obj := ki.New()
	if err := decodeStrict(http.MaxBytesReader(w, r.Body, maxBodyBytes), obj); err != nil {
		return nil, badRequest("malformed %s body: %v", ki.Singular, err)
	}
	tm, m := obj.GetTypeMeta(), obj.GetMetadata()
	if tm.Kind == "" {
		tm.Kind = ki.Kind
	}
	if tm.APIVersion == "" {
		tm.APIVersion = v1alpha1.APIVersion
	}
	if tm.Kind != ki.Kind {
		return nil, badRequest("the body is a %s but the path is for %s", tm.Kind, ki.Plural)
	}
	if tm.APIVersion != v1alpha1.APIVersion {
		return nil, badRequest("apiVersion %q is not served: use %s", tm.APIVersion, v1alpha1.APIVersion)
	}
	if m.Namespace == "" {
		m.Namespace = ns
	}
	if m.Namespace != ns {
		return nil, badRequest("metadata.namespace %q does not match the namespace %q of the path", m.Namespace, ns)
	}
	if name != "" && m.Name != name {
		return nil, badRequest("metadata.name %q does not match the name %q of the path", m.Name, name)
	}
	return obj, nil
}

// validate defaults obj and returns a 422 listing every problem, or nil.
func validate(obj v1alpha1.Object) error {
	v1alpha1.SetDefaults(obj)
	errs := v1alpha1.Validate(obj)
	if len(errs) == 0 {
		return nil
	}
	kind, name := obj.GetTypeMeta().Kind, obj.GetMetadata().Name
	details := make([]string, len(errs))
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
		details[i] = kind + "/" + name + ": " + msgs[i]
	}
	return invalid(fmt.Sprintf("%s %q is invalid: %s", kind, name, strings.Join(msgs, "; ")), details)
}

// admit sets what the server owns on a new object: a Sandbox is born with
// the cleanup finalizer, so deletion always waits for the reconciler to tear
// its sandbox down (and the reconciler need not add it in a second write).
// The store keeps the stored finalizers when an apply updates an object.
func admit(obj v1alpha1.Object) {
	if obj.GetTypeMeta().Kind != v1alpha1.KindSandbox {
		return
	}
	m := obj.GetMetadata()
	if !slices.Contains(m.Finalizers, v1alpha1.FinalizerSandbox) {
		m.Finalizers = append(m.Finalizers, v1alpha1.FinalizerSandbox)
	}
}

// keepCleanupFinalizer keeps a live Sandbox's cleanup finalizer when an
// update leaves it out (a PUT of an edited manifest): without it, deleting the
// object would skip the teardown and leave the sandbox running. Once the
// object is being deleted the finalizer may be removed by hand, to let go of
// a sandbox whose cleanup cannot finish.
func keepCleanupFinalizer(obj, cur v1alpha1.Object) {
	cm := cur.GetMetadata()
	if obj.GetTypeMeta().Kind != v1alpha1.KindSandbox || cm.DeletionTimestamp != nil || !slices.Contains(cm.Finalizers, v1alpha1.FinalizerSandbox) {
		return
	}
	m := obj.GetMetadata()
	if !slices.Contains(m.Finalizers, v1alpha1.FinalizerSandbox) {
		m.Finalizers = append(m.Finalizers, v1alpha1.FinalizerSandbox)
	}
}

// clone deep-copies obj (through JSON, which is what it is made of).
func clone(obj v1alpha1.Object) (v1alpha1.Object, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	c := ki.New()
	if err := json.Unmarshal(b, c); err != nil {
		return nil, err
	}
	return c, nil
}

// out prepares obj to leave the server: a copy, with its type set and every
// secret value redacted. The store's object is never modified (a watch may
// share it with other watchers).
func out(obj v1alpha1.Object) (v1alpha1.Object, error) {
	c, err := clone(obj)
	if err != nil {
		return nil, err
	}
	ki, err := v1alpha1.KindOf(c)
	if err != nil {
		return nil, err
	}
	c = v1alpha1.Redact(c)
	tm := c.GetTypeMeta()
	tm.APIVersion, tm.Kind = v1alpha1.APIVersion, ki.Kind
	return c, nil
}

// outOwned is out for an object the caller owns (fresh from the store's
// List or Events, shared with no one): it is redacted and typed without
// the copy, which was two thirds of a list's cost at a thousand objects.
func outOwned(obj v1alpha1.Object, ki v1alpha1.KindInfo) v1alpha1.Object {
	c := v1alpha1.Redact(obj)
	tm := c.GetTypeMeta()
	tm.APIVersion, tm.Kind = v1alpha1.APIVersion, ki.Kind
	return c
}

// copyField sets the exported field name of *dst to that of *src, if both
// have it. It lets PUT keep status (and PUT /status keep spec) for any kind.
func copyField(dst, src v1alpha1.Object, name string) {
	d := reflect.ValueOf(dst).Elem().FieldByName(name)
	s := reflect.ValueOf(src).Elem().FieldByName(name)
	if d.IsValid() && s.IsValid() && d.CanSet() && d.Type() == s.Type() {
		d.Set(s)
	}
}

// keepSecretValues puts back the stored value of every secret key that a
// client sent as "<redacted>" (it read the object and wrote it back), so a
// read-modify-write never replaces a secret with the placeholder.
func keepSecretValues(obj, cur v1alpha1.Object) error {
	s, ok1 := obj.(*v1alpha1.Secret)
	c, ok2 := cur.(*v1alpha1.Secret)
	if !ok1 || !ok2 {
		return nil
	}
	kept := false
	restore := func(m, old map[string]string) {
		for k, v := range m {
			if v != v1alpha1.Redacted {
				continue
			}
			if ov, ok := old[k]; ok {
				m[k] = ov
				kept = true
			}
		}
	}
	restore(s.Spec.StringData, c.Spec.StringData)
	restore(s.Spec.Data, c.Spec.Data)
	// Redact may have shown a Data value under StringData or the reverse.
	restore(s.Spec.StringData, c.Spec.Data)
	restore(s.Spec.Data, c.Spec.StringData)
	// Whoever did not send the values may not change where they may be sent:
	// otherwise a client that can only read redacted Secrets could point a
	// credential at a host of its choosing.
	if kept && (!slices.Equal(s.Spec.AllowedHosts, c.Spec.AllowedHosts) || !slices.Equal(s.Spec.SubstituteIn, c.Spec.SubstituteIn)) {
		return invalid(fmt.Sprintf("Secret %q: changing allowedHosts or substituteIn needs the secret's values: give them again instead of %s", s.Metadata.Name, v1alpha1.Redacted),
			[]string{"Secret/" + s.Metadata.Name + ": spec.allowedHosts: changing where a secret may be sent needs its values"})
	}
	return nil
}

func (s *server) writeObject(w http.ResponseWriter, code int, obj v1alpha1.Object) error {
	o, err := out(obj)
	if err != nil {
		return err
	}
	writeJSON(w, code, o)
	return nil
}

func (s *server) get(w http.ResponseWriter, r *http.Request) error {
	ki, err := kindFor(r.PathValue("plural"))
	if err != nil {
		return err
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	obj := ki.New()
	if err := s.store.Get(ki.Kind, ns, name, obj); err != nil {
		return storeError(err, ki.Plural, ns, name)
	}
	return s.writeObject(w, http.StatusOK, obj)
}

func (s *server) create(w http.ResponseWriter, r *http.Request) error {
	ki, err := kindFor(r.PathValue("plural"))
	if err != nil {
		return err
	}
	if err := writable(ki); err != nil {
		return err
	}
	ns := r.PathValue("ns")
	obj, err := readObject(w, r, ki, ns, "")
	if err != nil {
		return err
	}
	if err := validate(obj); err != nil {
		return err
	}
	admit(obj)
	if err := s.store.Create(obj); err != nil {
		return storeError(err, ki.Plural, ns, obj.GetMetadata().Name)
	}
	// The store updates obj in place to what it stored.
	return s.writeObject(w, http.StatusCreated, obj)
}

func (s *server) update(w http.ResponseWriter, r *http.Request) error {
	return s.put(w, r, false)
}

func (s *server) updateStatus(w http.ResponseWriter, r *http.Request) error {
	return s.put(w, r, true)
}

// put updates spec and metadata (status ignored) or, on /status, status only.
func (s *server) put(w http.ResponseWriter, r *http.Request, statusOnly bool) error {
	ki, err := kindFor(r.PathValue("plural"))
	if err != nil {
		return err
	}
	if err := writable(ki); err != nil {
		return err
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	obj, err := readObject(w, r, ki, ns, name)
	if err != nil {
		return err
	}
	cur := ki.New()
	if err := s.store.Get(ki.Kind, ns, name, cur); err != nil {
		return storeError(err, ki.Plural, ns, name)
	}
	if statusOnly {
		copyField(obj, cur, "Spec")
		err = s.store.UpdateStatus(obj)
	} else {
		copyField(obj, cur, "Status")
		if err := keepSecretValues(obj, cur); err != nil {
			return err
		}
		keepCleanupFinalizer(obj, cur)
		if err := validate(obj); err != nil {
			return err
		}
		err = s.store.Update(obj)
	}
	if err != nil {
		return storeError(err, ki.Plural, ns, name)
	}
	return s.writeObject(w, http.StatusOK, obj)
}

func (s *server) delete(w http.ResponseWriter, r *http.Request) error {
	ki, err := kindFor(r.PathValue("plural"))
	if err != nil {
		return err
	}
	if err := writable(ki); err != nil {
		return err
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if err := s.store.Delete(ki.Kind, ns, name); err != nil {
		return storeError(err, ki.Plural, ns, name)
	}
	// With finalizers the object stays, marked for deletion: show it.
	obj := ki.New()
	if err := s.store.Get(ki.Kind, ns, name, obj); err == nil {
		return s.writeObject(w, http.StatusOK, obj)
	}
	st := (&apiError{code: http.StatusOK, msg: fmt.Sprintf("%s %q deleted from namespace %q", ki.Plural, name, ns)}).status()
	writeJSON(w, http.StatusOK, st)
	return nil
}

// list serves list and watch, for one namespace or all.
func (s *server) list(w http.ResponseWriter, r *http.Request) error {
	ki, err := kindFor(r.PathValue("plural"))
	if err != nil {
		return err
	}
	ns := r.PathValue("ns") // "" on the all-namespaces path
	q := r.URL.Query()
	f, err := newFilter(ki, ns, q.Get("labelSelector"), q.Get("fieldSelector"))
	if err != nil {
		return err
	}
	if watch, err := boolParam(q, "watch"); err != nil {
		return err
	} else if watch {
		var rv int64
		if v := q.Get("resourceVersion"); v != "" && v != "0" {
			rv, err = strconv.ParseInt(v, 10, 64)
			if err != nil || rv < 0 {
				return badRequest("resourceVersion %q is not a revision number", v)
			}
		}
		return s.watch(w, r, ki, f, rv)
	}

	var objs []v1alpha1.Object
	var rev int64
	if ki.Kind == v1alpha1.KindEvent {
		rev = s.store.Revision()
		evs, err := s.store.Events(ns, f.involvedObject())
		if err != nil {
			return storeError(err, ki.Plural, ns, "")
		}
		for i := range evs {
			objs = append(objs, &evs[i])
		}
	} else {
		objs, rev, err = s.store.List(ki.Kind, ns)
		if err != nil {
			return storeError(err, ki.Plural, ns, "")
		}
	}
	items := make([]v1alpha1.Object, 0, len(objs))
	for _, o := range objs {
		ok, err := f.match(o)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		items = append(items, outOwned(o, ki))
	}
	writeJSON(w, http.StatusOK, v1alpha1.List[v1alpha1.Object]{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: ki.Kind + "List"},
		Metadata: v1alpha1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
		Items:    items,
	})
	return nil
}

func boolParam(q map[string][]string, name string) (bool, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	switch strings.ToLower(v) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, badRequest("%s=%q: want true or false", name, v)
}

// watchLine is one line of a watch stream.
type watchLine struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

// watch streams changes as newline-delimited JSON, flushing after each line.
func (s *server) watch(w http.ResponseWriter, r *http.Request, ki v1alpha1.KindInfo, f *filter, rv int64) error {
	ctx := r.Context()
	ch, err := s.store.Watch(ctx, rv)
	if err != nil {
		return storeError(err, ki.Plural, f.namespace, "")
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// The watch is registered: tell the client at once so it can rely on it.
	if err := rc.Flush(); err != nil {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for {
		var line watchLine
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				// The store ended the watch (e.g. this client fell too far behind).
				line = watchLine{Type: "ERROR", Object: (&apiError{code: http.StatusGone, reason: "Gone",
					msg: "the watch was closed by the server: list again and watch from the list's resourceVersion"}).status()}
				buf.Reset()
				if enc.Encode(line) == nil {
					_, _ = w.Write(buf.Bytes())
					_ = rc.Flush()
				}
				return nil
			}
			if ev.Object == nil {
				continue
			}
			kind := ev.Kind
			if kind == "" {
				kind = ev.Object.GetTypeMeta().Kind
			}
			if kind != ki.Kind {
				continue
			}
			ok, err := f.match(ev.Object)
			if err != nil || !ok {
				continue
			}
			o, err := out(ev.Object)
			if err != nil {
				s.log.Error("watch: cannot encode object", "key", v1alpha1.KeyOf(ev.Object), "err", err)
				continue
			}
			line = watchLine{Type: ev.Type, Object: o}
		}
		buf.Reset()
		if err := enc.Encode(line); err != nil {
			s.log.Error("watch: cannot encode event", "err", err)
			continue
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}
