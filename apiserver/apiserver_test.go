package apiserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/client"
)

func TestVersionAndHealth(t *testing.T) {
	e := newEnv(t)
	v, err := e.client.Version(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "test" || v.Driver != "fake" {
		t.Fatalf("version = %+v", v)
	}
	resp := rawRequest(t, e, http.MethodGet, "/healthz", "")
	if resp.code != 200 || resp.body != "ok\n" {
		t.Fatalf("healthz = %d %q", resp.code, resp.body)
	}
}

func TestCRUD(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.client

	created, err := c.Create(ctx, sandbox("", "web", map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	m := created.GetMetadata()
	if m.Namespace != "default" || m.UID == "" || m.ResourceVersion == "" || m.Generation != 1 {
		t.Fatalf("created metadata = %+v", m)
	}
	if sb := created.(*v1alpha1.Sandbox); sb.Spec.RestartPolicy != v1alpha1.RestartNever {
		t.Fatalf("defaults not applied: %+v", sb.Spec)
	}

	if _, err := c.Create(ctx, sandbox("default", "web", nil)); !client.IsAlreadyExists(err) || !client.IsConflict(err) {
		t.Fatalf("second create: %v, want 409 AlreadyExists", err)
	}

	got, err := c.Get(ctx, "sb", "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetTypeMeta().Kind != v1alpha1.KindSandbox || got.GetMetadata().UID != m.UID {
		t.Fatalf("get = %+v", got)
	}

	// Update with the current resourceVersion works; a stale one is a 409.
	sb := got.(*v1alpha1.Sandbox)
	sb.Spec.Args = []string{"x"}
	sb.Status.Phase = v1alpha1.PhaseRunning // ignored by PUT
	updated, err := c.Update(ctx, sb)
	if err != nil {
		t.Fatal(err)
	}
	usb := updated.(*v1alpha1.Sandbox)
	if usb.Metadata.Generation != 2 || !slices.Equal(usb.Spec.Args, []string{"x"}) || usb.Status.Phase != "" {
		t.Fatalf("updated = %+v / %+v", usb.Metadata, usb.Status)
	}
	stale := sb // still carries the old resourceVersion
	stale.Spec.Args = []string{"y"}
	_, err = c.Update(ctx, stale)
	var ae *client.APIError
	if !client.IsConflict(err) || !errors.As(err, &ae) || ae.Reason != "Conflict" {
		t.Fatalf("stale update: %v, want 409 Conflict", err)
	}

	// PUT /status changes the status only.
	usb.Status.Phase = v1alpha1.PhaseRunning
	usb.Spec.Args = []string{"ignored"}
	st, err := c.UpdateStatus(ctx, usb)
	if err != nil {
		t.Fatal(err)
	}
	ssb := st.(*v1alpha1.Sandbox)
	if ssb.Status.Phase != v1alpha1.PhaseRunning || !slices.Equal(ssb.Spec.Args, []string{"x"}) {
		t.Fatalf("after status update: spec %+v status %+v", ssb.Spec, ssb.Status)
	}

	objs, rv, err := c.List(ctx, "Sandbox", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || rv == "" {
		t.Fatalf("list = %v rv %q", names(objs), rv)
	}

	if err := c.Delete(ctx, "Sandbox", "default", "web"); err != nil {
		t.Fatal(err)
	}
	// Sandboxes are born with the cleanup finalizer: deletion waits for the
	// reconciler, simulated here by removing the finalizer.
	got, err = c.Get(ctx, "Sandbox", "default", "web")
	if err != nil || got.GetMetadata().DeletionTimestamp == nil || !slices.Contains(got.GetMetadata().Finalizers, v1alpha1.FinalizerSandbox) {
		t.Fatalf("after delete: %v %+v, want deletionTimestamp and the finalizer", err, got)
	}
	got.GetMetadata().Finalizers = nil
	if _, err := c.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, "Sandbox", "default", "web")
	if !client.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want 404", err)
	}
	if want := `sandboxes "web" not found in namespace "default"`; err.Error() != want {
		t.Fatalf("404 message %q, want %q", err.Error(), want)
	}
	if err := c.Delete(ctx, "Sandbox", "default", "web"); !client.IsNotFound(err) {
		t.Fatalf("second delete: %v, want 404", err)
	}
}

func TestDeleteWithFinalizer(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	sb := sandbox("default", "fin", nil)
	sb.Metadata.Finalizers = []string{v1alpha1.FinalizerSandbox}
	if _, err := e.client.Create(ctx, sb); err != nil {
		t.Fatal(err)
	}
	resp := rawRequest(t, e, http.MethodDelete, "/apis/msb.dev/v1alpha1/namespaces/default/sandboxes/fin", "")
	if resp.code != 200 {
		t.Fatalf("delete: %d %s", resp.code, resp.body)
	}
	var got v1alpha1.Sandbox
	if err := json.Unmarshal([]byte(resp.body), &got); err != nil || got.Metadata.DeletionTimestamp == nil {
		t.Fatalf("delete answered %s (err %v), want the object with deletionTimestamp", resp.body, err)
	}

	// A PUT that leaves the cleanup finalizer out keeps it on a live Sandbox.
	live, err := e.client.Create(ctx, sandbox("default", "live", nil))
	if err != nil {
		t.Fatal(err)
	}
	live.GetMetadata().Finalizers = nil
	updated, err := e.client.Update(ctx, live)
	if err != nil || !slices.Contains(updated.GetMetadata().Finalizers, v1alpha1.FinalizerSandbox) {
		t.Fatalf("PUT without the finalizer: %v; finalizers %v, want it kept", err, updated.GetMetadata().Finalizers)
	}

	// Without finalizers the answer is a Status.
	if _, err := e.client.Create(ctx, secret("default", "plain", "k", "v")); err != nil {
		t.Fatal(err)
	}
	resp = rawRequest(t, e, http.MethodDelete, "/apis/msb.dev/v1alpha1/namespaces/default/secrets/plain", "")
	if resp.code != 200 || !strings.Contains(resp.body, `"kind": "Status"`) || !strings.Contains(resp.body, "Success") {
		t.Fatalf("delete: %d %s", resp.code, resp.body)
	}
}

func TestInvalid(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	bad := sandbox("default", "Bad_Name", nil)
	bad.Spec.Image = ""
	_, err := e.client.Create(ctx, bad)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 422 || ae.Reason != "Invalid" || !client.IsInvalid(err) {
		t.Fatalf("create invalid: %v", err)
	}
	if len(ae.Details) < 2 {
		t.Fatalf("want every problem in details, got %q", ae.Details)
	}
	for _, d := range ae.Details {
		if !strings.HasPrefix(d, "Sandbox/Bad_Name: ") {
			t.Errorf("detail %q lacks the kind/name prefix", d)
		}
	}
	joined := strings.Join(ae.Details, "\n")
	if !strings.Contains(joined, "metadata.name") || !strings.Contains(joined, "spec.image") {
		t.Errorf("details %q should name metadata.name and spec.image", joined)
	}
	objs, _, err := e.client.List(ctx, "Sandbox", "", "")
	if err != nil || len(objs) != 0 {
		t.Fatalf("list after invalid create: %v %v", names(objs), err)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	base := "/apis/msb.dev/v1alpha1"
	for _, tc := range []struct {
		method, path, body string
		code               int
		reason             string
	}{
		{"POST", base + "/namespaces/default/sandboxes", "{not json", 400, "BadRequest"},
		{"POST", base + "/namespaces/default/sandboxes", `{"metadata":{"name":"a"},"spec":{"image":"x"},"bogus":1}`, 400, "BadRequest"},
		{"POST", base + "/namespaces/other/sandboxes", `{"metadata":{"name":"a","namespace":"default"},"spec":{"image":"x"}}`, 400, "BadRequest"},
		{"POST", base + "/namespaces/default/sandboxes", `{"kind":"Secret","metadata":{"name":"a"},"spec":{}}`, 400, "BadRequest"},
		{"POST", base + "/namespaces/default/events", `{"metadata":{"name":"a"}}`, 405, "MethodNotAllowed"},
		{"GET", base + "/namespaces/default/widgets", "", 404, "NotFound"},
		{"GET", base + "/namespaces/default/sandboxes?labelSelector=a%3D%3D%3Db", "", 400, "BadRequest"},
		{"GET", base + "/namespaces/default/sandboxes?fieldSelector=spec.image%3Dx", "", 400, "BadRequest"},
		{"GET", base + "/namespaces/default/sandboxes?watch=maybe", "", 400, "BadRequest"},
		{"POST", base + "/apply", `{"items":[`, 400, "BadRequest"},
		{"GET", "/nope", "", 404, "NotFound"},
		{"POST", base + "/namespaces/default/sandboxes/x/exec", "", 400, "BadRequest"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp := rawRequest(t, e, tc.method, tc.path, tc.body)
			var st struct {
				Kind, Reason, Message string
				Code                  int
			}
			if err := json.Unmarshal([]byte(resp.body), &st); err != nil {
				t.Fatalf("%d %q is not a Status: %v", resp.code, resp.body, err)
			}
			if resp.code != tc.code || st.Code != tc.code || st.Reason != tc.reason || st.Kind != "Status" || st.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.code, st, tc.code, tc.reason)
			}
		})
	}
}

func TestApply(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.client
	objs := []v1alpha1.Object{
		secret("", "key", "token", "v1"),
		sandbox("", "a", nil),
		sandbox("team", "b", nil),
	}
	res, err := c.Apply(ctx, objs, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(res); got != "Secret/default/key=created Sandbox/default/a=created Sandbox/team/b=created" {
		t.Fatalf("dry run: %s", got)
	}
	if l, _, _ := c.List(ctx, "Sandbox", "", ""); len(l) != 0 {
		t.Fatalf("dry run wrote %v", names(l))
	}

	if res, err = c.Apply(ctx, objs, false); err != nil {
		t.Fatal(err)
	}
	if got := actions(res); got != "Secret/default/key=created Sandbox/default/a=created Sandbox/team/b=created" {
		t.Fatalf("apply: %s", got)
	}

	changed := sandbox("", "a", nil)
	changed.Spec.Args = []string{"more"}
	res, err = c.Apply(ctx, []v1alpha1.Object{secret("", "key", "token", "v1"), changed, sandbox("team", "b", nil)}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(res); got != "Secret/default/key=unchanged Sandbox/default/a=configured Sandbox/team/b=unchanged" {
		t.Fatalf("re-apply: %s", got)
	}

	// All or nothing: two invalid objects among valid ones; every problem is
	// reported with its object, and nothing is written.
	bad1 := sandbox("", "bad1", nil)
	bad1.Spec.Image = ""
	bad2 := &v1alpha1.NetworkPolicy{Metadata: v1alpha1.ObjectMeta{Name: "bad2"},
		Spec: v1alpha1.NetworkPolicySpec{Egress: []v1alpha1.EgressRule{{To: []v1alpha1.EgressPeer{{CIDR: "not-a-cidr"}}}}}}
	_, err = c.Apply(ctx, []v1alpha1.Object{sandbox("", "new", nil), bad1, bad2}, false)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 422 {
		t.Fatalf("apply with invalid objects: %v", err)
	}
	var has1, has2 bool
	for _, d := range ae.Details {
		has1 = has1 || strings.HasPrefix(d, "Sandbox/bad1: ")
		has2 = has2 || strings.HasPrefix(d, "NetworkPolicy/bad2: ")
	}
	if !has1 || !has2 {
		t.Fatalf("details %q should cover Sandbox/bad1 and NetworkPolicy/bad2", ae.Details)
	}
	if _, err := c.Get(ctx, "Sandbox", "default", "new"); !client.IsNotFound(err) {
		t.Fatalf("valid object of a failed apply was written: %v", err)
	}

	// A failure inside the store transaction writes nothing either.
	del := sandbox("", "dying", nil)
	del.Metadata.Finalizers = []string{v1alpha1.FinalizerSandbox}
	if _, err := c.Create(ctx, del); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "Sandbox", "default", "dying"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Apply(ctx, []v1alpha1.Object{sandbox("", "new", nil), sandbox("", "dying", nil)}, false)
	if !client.IsConflict(err) {
		t.Fatalf("apply over an object being deleted: %v, want 409", err)
	}
	if _, err := c.Get(ctx, "Sandbox", "default", "new"); !client.IsNotFound(err) {
		t.Fatalf("first object of a failed apply was written: %v", err)
	}

	// Unknown kinds and duplicates are reported, not applied.
	resp := rawRequest(t, e, http.MethodPost, "/apis/msb.dev/v1alpha1/apply",
		`{"items":[{"apiVersion":"msb.dev/v1alpha1","kind":"Widget","metadata":{"name":"w"}},`+
			`{"apiVersion":"msb.dev/v1alpha1","kind":"Sandbox","metadata":{"name":"d"},"spec":{"image":"x"}},`+
			`{"apiVersion":"msb.dev/v1alpha1","kind":"Sandbox","metadata":{"name":"d"},"spec":{"image":"x"}}]}`)
	if resp.code != 422 || !strings.Contains(resp.body, "Widget/w: kind") || !strings.Contains(resp.body, "Sandbox/d: appears more than once") {
		t.Fatalf("apply of unknown kind and duplicate: %d %s", resp.code, resp.body)
	}
}

func actions(res []client.ApplyResult) string {
	var parts []string
	for _, r := range res {
		parts = append(parts, fmt.Sprintf("%s/%s/%s=%s", r.Kind, r.Namespace, r.Name, r.Action))
	}
	return strings.Join(parts, " ")
}

func TestLabelSelector(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, sb := range []*v1alpha1.Sandbox{
		sandbox("default", "a", map[string]string{"app": "web", "tier": "front"}),
		sandbox("default", "b", map[string]string{"app": "db"}),
		sandbox("other", "c", map[string]string{"app": "web"}),
		sandbox("other", "d", nil),
	} {
		if _, err := e.client.Create(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		ns, sel string
		want    []string
	}{
		{"", "", []string{"default/a", "default/b", "other/c", "other/d"}},
		{"", "app=web", []string{"default/a", "other/c"}},
		{"default", "app=web", []string{"default/a"}},
		{"", "app!=web", []string{"default/b", "other/d"}},
		{"", "app,!tier", []string{"default/b", "other/c"}},
		{"other", "", []string{"other/c", "other/d"}},
	} {
		objs, _, err := e.client.List(ctx, "Sandbox", tc.ns, tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(objs); !slices.Equal(got, tc.want) {
			t.Errorf("list ns=%q sel=%q = %v, want %v", tc.ns, tc.sel, got, tc.want)
		}
	}
	if _, _, err := e.client.List(ctx, "Sandbox", "", "a=b=c"); err == nil {
		t.Fatal("malformed selector accepted")
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.client
	if _, err := c.Create(ctx, sandbox("default", "before", nil)); err != nil {
		t.Fatal(err)
	}
	_, rv, err := c.List(ctx, "Sandbox", "default", "")
	if err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	all, err := c.Watch(wctx, "Sandbox", "default", rv)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := c.WatchSelected(wctx, "Sandbox", "", "app=web", rv)
	if err != nil {
		t.Fatal(err)
	}

	a, err := c.Create(ctx, sandbox("default", "a", map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, sandbox("other", "b", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, secret("default", "s", "k", "v")); err != nil { // other kind: not seen
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, sandbox("default", "c", nil)); err != nil {
		t.Fatal(err)
	}
	if err := deleteNow(e, c, ctx, "a"); err != nil {
		t.Fatal(err)
	}

	// Deletion first marks the object (MODIFIED: deletionTimestamp), then
	// removes it once the finalizer is gone.
	want := []string{"ADDED default/a", "ADDED default/c", "MODIFIED default/a", "DELETED default/a"}
	if got := collect(t, all, len(want)); !slices.Equal(got, want) {
		t.Fatalf("namespace watch = %v, want %v", got, want)
	}
	want = []string{"ADDED default/a", "ADDED other/b", "MODIFIED default/a", "DELETED default/a"}
	if got := collect(t, sel, len(want)); !slices.Equal(got, want) {
		t.Fatalf("selector watch = %v, want %v", got, want)
	}

	// Resume after a's creation: the rest comes again, in order.
	resumed, err := c.Watch(wctx, "Sandbox", "", a.GetMetadata().ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"ADDED other/b", "ADDED default/c", "MODIFIED default/a", "DELETED default/a"}
	if got := collect(t, resumed, len(want)); !slices.Equal(got, want) {
		t.Fatalf("resumed watch = %v, want %v", got, want)
	}

	// "" = from now: only later changes.
	now, err := c.Watch(wctx, "Sandbox", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, sandbox("default", "later", nil)); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, now, 1); !slices.Equal(got, []string{"ADDED default/later"}) {
		t.Fatalf("watch from now = %v", got)
	}

	cancel()
	select {
	case _, ok := <-all:
		for ok {
			_, ok = <-all
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch channel not closed after cancel")
	}
}

func collect(t *testing.T, ch <-chan client.WatchEvent, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %v", got)
			}
			if ev.Object == nil {
				t.Fatalf("event %s without object", ev.Type)
			}
			m := ev.Object.GetMetadata()
			got = append(got, ev.Type+" "+m.Namespace+"/"+m.Name)
		case <-timeout:
			t.Fatalf("timed out after %v", got)
		}
	}
	return got
}

func TestEvents(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, ev := range []struct{ ns, kind, name, reason string }{
		{"default", "Sandbox", "x", "Pulling"},
		{"default", "Sandbox", "y", "Pulled"},
		{"default", "Sandbox", "x", "Started"},
		{"other", "Sandbox", "x", "Elsewhere"},
		{"default", "NetworkPolicy", "x", "Applied"},
	} {
		ref := v1alpha1.ObjectReference{Kind: ev.kind, Namespace: ev.ns, Name: ev.name}
		if err := e.store.RecordEvent(ref, v1alpha1.EventNormal, ev.reason, "about "+ev.name); err != nil {
			t.Fatal(err)
		}
		// Distinct FirstSeen, since oldest first is checked: the next event is
		// recorded once the wall clock has moved past this one's (no guessed sleep).
		for recorded := time.Now().Round(0); !time.Now().Round(0).After(recorded); {
		}
	}
	reasons := func(evs []v1alpha1.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Reason)
		}
		return out
	}
	for _, tc := range []struct {
		ns, kind, name string
		want           []string
	}{
		{"default", "Sandbox", "x", []string{"Pulling", "Started"}},
		{"default", "sb", "y", []string{"Pulled"}},
		{"default", "", "", []string{"Pulling", "Pulled", "Started", "Applied"}},
		{"", "Sandbox", "x", []string{"Pulling", "Started", "Elsewhere"}},
		{"", "", "", []string{"Pulling", "Pulled", "Started", "Elsewhere", "Applied"}},
	} {
		evs, err := e.client.Events(ctx, tc.ns, tc.kind, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := reasons(evs); !slices.Equal(got, tc.want) {
			t.Errorf("events ns=%q %s/%s = %v, want %v", tc.ns, tc.kind, tc.name, got, tc.want)
		}
	}
	// The raw field selector, as kubectl writes it.
	resp := rawRequest(t, e, http.MethodGet,
		"/apis/msb.dev/v1alpha1/namespaces/default/events?fieldSelector=involvedObject.kind%3DSandbox%2CinvolvedObject.name%3Dy", "")
	if resp.code != 200 || !strings.Contains(resp.body, "Pulled") || strings.Contains(resp.body, "Pulling") {
		t.Fatalf("field selector: %d %s", resp.code, resp.body)
	}
	// Events can be watched too.
	_, rv, err := e.client.List(ctx, "Event", "default", "")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := e.client.Watch(ctx, "Event", "default", rv)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.RecordEvent(v1alpha1.ObjectReference{Kind: "Sandbox", Namespace: "default", Name: "z"}, v1alpha1.EventWarning, "Failed", "boom"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if e, ok := ev.Object.(*v1alpha1.Event); !ok || e.Reason != "Failed" {
			t.Fatalf("watched %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event watched")
	}
}

func TestLogs(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "app", nil)); err != nil {
		t.Fatal(err)
	}
	dir := e.rt.logDir
	write := func(name, s string) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("log.1", "old 1\nold 2\n")
	write("log", "new 1\n")

	var buf bytes.Buffer
	if err := e.client.Logs(ctx, "default", "app", false, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "old 1\nold 2\nnew 1\n" {
		t.Fatalf("logs = %q", buf.String())
	}
	if err := e.client.Logs(ctx, "default", "nope", false, &buf); !client.IsNotFound(err) {
		t.Fatalf("logs of a missing sandbox: %v", err)
	}

	// Follow: appended bytes and a rotation both come through.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- e.client.Logs(fctx, "default", "app", true, out) }()
	waitFor(t, func() bool { return strings.HasSuffix(out.String(), "new 1\n") }, "initial log")
	write("log", "new 2\n")
	waitFor(t, func() bool { return strings.HasSuffix(out.String(), "new 2\n") }, "appended line")
	if err := os.Rename(filepath.Join(dir, "log"), filepath.Join(dir, "log.1")); err != nil {
		t.Fatal(err)
	}
	write("log", "rotated 1\n")
	waitFor(t, func() bool { return strings.HasSuffix(out.String(), "rotated 1\n") }, "line after rotation")
	if got := out.String(); got != "old 1\nold 2\nnew 1\nnew 2\nrotated 1\n" {
		t.Fatalf("followed = %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end with its context")
	}

	// Following ends when the sandbox is deleted. The delete comes once the
	// follow has printed the log so far, so it is known to be following.
	out = &syncBuffer{}
	go func() { done <- e.client.Logs(ctx, "default", "app", true, out) }()
	waitFor(t, func() bool { return strings.HasSuffix(out.String(), "rotated 1\n") }, "the second follow to start")
	if err := deleteNow(e, e.client, ctx, "app"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when the sandbox was deleted")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSecretsNeverLeave(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.client
	const value = "sk-TOPSECRET-0123456789"

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := c.Watch(wctx, "Secret", "", "")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Apply(ctx, []v1alpha1.Object{secret("default", "api", "token", value)}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(ctx, []v1alpha1.Object{secret("default", "api", "token", value)}, false); err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, secret("default", "api2", "token", value))
	if err != nil {
		t.Fatal(err)
	}
	if s := created.(*v1alpha1.Secret); s.Spec.StringData["token"] != v1alpha1.Redacted {
		t.Fatalf("create answered %q", s.Spec.StringData["token"])
	}
	got, err := c.Get(ctx, "Secret", "default", "api")
	if err != nil {
		t.Fatal(err)
	}
	if s := got.(*v1alpha1.Secret); s.Spec.StringData["token"] != v1alpha1.Redacted {
		t.Fatalf("get answered %q", s.Spec.StringData["token"])
	}
	// Read-modify-write with the redacted object keeps the stored value...
	s := got.(*v1alpha1.Secret)
	s.Metadata.Labels = map[string]string{"team": "a"}
	if _, err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	var stored v1alpha1.Secret
	if err := e.store.Get("Secret", "default", "api", &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Spec.StringData["token"] != value || stored.Metadata.Labels["team"] != "a" {
		t.Fatalf("update changed the stored secret: %+v", stored.Spec)
	}
	// ...but cannot point the secret at another host without giving it.
	s.Metadata.ResourceVersion = stored.Metadata.ResourceVersion
	s.Spec.AllowedHosts = append(s.Spec.AllowedHosts, "attacker.example.com")
	if _, err := c.Update(ctx, s); !client.IsInvalid(err) {
		t.Fatalf("redirecting a redacted secret: %v, want 422", err)
	}
	s.Spec.StringData = map[string]string{"token": value}
	if _, err := c.Update(ctx, s); err != nil {
		t.Fatalf("changing allowedHosts with the value given: %v", err)
	}
	if _, _, err := c.List(ctx, "Secret", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.List(ctx, "Secret", "default", ""); err != nil {
		t.Fatal(err)
	}
	// A secret with a bad field: the 422 must not echo the value either.
	bad := secret("default", "bad", "token", value)
	bad.Spec.SubstituteIn = []string{"nowhere"}
	if _, err := c.Apply(ctx, []v1alpha1.Object{bad}, false); !client.IsInvalid(err) {
		t.Fatalf("bad secret: %v", err)
	}
	for range 4 { // ADDED api, ADDED api2, MODIFIED api twice
		select {
		case ev := <-watch:
			if s := ev.Object.(*v1alpha1.Secret); s.Spec.StringData["token"] != v1alpha1.Redacted {
				t.Fatalf("watch event carries %q", s.Spec.StringData["token"])
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event")
		}
	}
	if err := c.Delete(ctx, "Secret", "default", "api"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-watch:
		if ev.Type != "DELETED" {
			t.Fatalf("got %s", ev.Type)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DELETED event")
	}
	cancel()

	if strings.Contains(e.written.String(), value) {
		t.Fatal("the secret value was sent to a client")
	}
	if !strings.Contains(e.written.String(), v1alpha1.Redacted) {
		t.Fatal("the tap saw no redacted secret: is it recording?")
	}
	if strings.Contains(e.logs.String(), value) {
		t.Fatal("the secret value was logged")
	}
	if !strings.Contains(e.logs.String(), "api request") {
		t.Fatal("requests are not logged at debug level")
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "msbapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "run", "msbd.sock")

	ln, err := apiserver.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (err %v), want 0600", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode %v (err %v), want 0700", di.Mode(), err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// A live socket is refused.
	if _, err := apiserver.Listen(path); err == nil || err.Error() != "another msbd is listening on "+path {
		t.Fatalf("listen on a live socket: %v", err)
	}

	// A stale one (its server died without removing it) is replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln2, err := apiserver.Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	defer ln2.Close()
	go func() {
		c, err := ln2.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi" {
		t.Fatalf("new listener answered %q", b)
	}

	// A regular file is not removed.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := apiserver.Listen(file); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}

func TestUnreachable(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "msbapi")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	missing := filepath.Join(dir, "msbd.sock")
	want := "cannot reach msbd at " + missing + ": is msbd running? (set --socket or MSB_SOCKET)"
	_, err = client.New(missing).Version(ctxT(t))
	if err == nil || err.Error() != want {
		t.Fatalf("missing socket: %v\nwant %s", err, want)
	}
	// A socket nobody accepts on.
	ln, err := net.Listen("unix", missing)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = client.New(missing).Get(ctxT(t), "Sandbox", "", "x")
	if err == nil || err.Error() != want {
		t.Fatalf("refusing socket: %v\nwant %s", err, want)
	}
	_, err = client.New(missing).Exec(ctxT(t), "", "x", client.ExecOptions{Command: []string{"true"}})
	if err == nil || err.Error() != want {
		t.Fatalf("exec on a refusing socket: %v\nwant %s", err, want)
	}
}

type rawResponse struct {
	code int
	body string
}

// rawRequest sends one request without the client, to see the wire format.
func rawRequest(t *testing.T, e *env, method, path, body string) rawResponse {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}}}
	req, err := http.NewRequestWithContext(ctxT(t), method, "http://msbd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{resp.StatusCode, string(b)}
}

// deleteNow deletes a Sandbox and plays the reconciler's part: it removes the
// cleanup finalizer the server put on it, so the object goes away.
func deleteNow(e *env, c *client.Client, ctx context.Context, name string) error {
	if err := c.Delete(ctx, "Sandbox", "default", name); err != nil {
		return err
	}
	var sb v1alpha1.Sandbox
	if err := e.store.Get(v1alpha1.KindSandbox, "default", name, &sb); err != nil {
		return err
	}
	sb.Metadata.Finalizers = nil
	return e.store.Update(&sb)
}
