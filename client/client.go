// Package client is the Go client of the msbd API (HTTP over a unix socket).
// msbctl, the end-to-end tests and SDK users talk to msbd only through it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

// DefaultSocket is where msbd listens unless told otherwise.
const DefaultSocket = "/run/msb/msbd.sock"

// Client talks to one msbd. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the msbd API socket at path ("" = DefaultSocket).
func New(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	c := &Client{socket: socketPath}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		DisableCompression: true,
		MaxIdleConns:       4,
		IdleConnTimeout:    90 * time.Second,
	}}
	return c
}

// Socket returns the path of the API socket the client talks to.
func (c *Client) Socket() string { return c.socket }

// APIError is an error answered by msbd: HTTP status, a CamelCase reason
// (NotFound, Conflict, Invalid, AlreadyExists, BadRequest, InternalError) and a message.
// Details lists every validation error when Reason is Invalid.
type APIError struct {
	Status  int      `json:"code"`
	Reason  string   `json:"reason"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
}

func (e *APIError) Error() string { return e.Message }

// IsNotFound reports whether err is a 404 from msbd.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is a 409 from msbd.
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

// IsAlreadyExists reports whether err is a 409 from msbd for a create of an
// object that exists.
func IsAlreadyExists(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Reason == "AlreadyExists"
}

// IsInvalid reports whether err is a 422 from msbd (see APIError.Details).
func IsInvalid(err error) bool { return hasStatus(err, http.StatusUnprocessableEntity) }

// IsGone reports whether err is a 410 from msbd: a watch asked for a revision
// that is no longer kept; list again and watch from the list's revision.
func IsGone(err error) bool { return hasStatus(err, http.StatusGone) }

func hasStatus(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == code
}

// ApplyResult says what apply did to one object.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Action is "created", "configured" or "unchanged".
	Action string `json:"action"`
}

// Apply creates or updates every object in one transaction on the server:
// all are validated first and, if any is invalid, none is written (APIError
// with Reason Invalid and every problem in Details). dryRun validates and
// reports what would happen without writing.
func (c *Client) Apply(ctx context.Context, objs []v1alpha1.Object, dryRun bool) ([]ApplyResult, error) {
	items := make([]json.RawMessage, len(objs))
	for i, obj := range objs {
		b, err := marshalWithType(obj)
		if err != nil {
			return nil, err
		}
		items[i] = b
	}
	q := url.Values{}
	if dryRun {
		q.Set("dryRun", "All")
	}
	body := struct {
		Items []json.RawMessage `json:"items"`
	}{items}
	var resp struct {
		Results []ApplyResult `json:"results"`
	}
	if err := c.do(ctx, http.MethodPost, apiPrefix+"/apply", q, body, &resp); err != nil {
		return nil, err
	}
	return resp.Results, nil
}

// Get returns one object. kind is a Kind name ("Sandbox").
func (c *Client) Get(ctx context.Context, kind, namespace, name string) (v1alpha1.Object, error) {
	ki, err := v1alpha1.LookupKind(kind)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, objectPath(ki, namespace, name), nil, nil, &raw); err != nil {
		return nil, err
	}
	return decodeObject(ki, raw)
}

// List returns objects of kind in namespace ("" = all namespaces) matching the
// label selector ("" = all; "a=b,c=d" or "a!=b"), and the revision it was read at.
func (c *Client) List(ctx context.Context, kind, namespace, labelSelector string) ([]v1alpha1.Object, string, error) {
	ki, err := v1alpha1.LookupKind(kind)
	if err != nil {
		return nil, "", err
	}
	q := url.Values{}
	if labelSelector != "" {
		q.Set("labelSelector", labelSelector)
	}
	var list v1alpha1.List[json.RawMessage]
	if err := c.do(ctx, http.MethodGet, collectionPath(ki, namespace), q, nil, &list); err != nil {
		return nil, "", err
	}
	objs := make([]v1alpha1.Object, 0, len(list.Items))
	for _, raw := range list.Items {
		obj, err := decodeObject(ki, raw)
		if err != nil {
			return nil, "", err
		}
		objs = append(objs, obj)
	}
	return objs, list.Metadata.ResourceVersion, nil
}

// Delete asks for deletion; a Sandbox goes away once its finalizer ran.
func (c *Client) Delete(ctx context.Context, kind, namespace, name string) error {
	ki, err := v1alpha1.LookupKind(kind)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, objectPath(ki, namespace, name), nil, nil, nil)
}

// Create creates obj (its kind comes from TypeMeta, or from its Go type) and
// returns it as stored.
func (c *Client) Create(ctx context.Context, obj v1alpha1.Object) (v1alpha1.Object, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, http.MethodPost, collectionPath(ki, namespaceOf(obj)), ki, obj)
}

// Update replaces obj's metadata and spec (its status is ignored) and returns
// the object as stored. Unless metadata.resourceVersion is the current one it
// fails with a 409 (IsConflict): get the object again and retry.
func (c *Client) Update(ctx context.Context, obj v1alpha1.Object) (v1alpha1.Object, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, http.MethodPut, objectPath(ki, namespaceOf(obj), obj.GetMetadata().Name), ki, obj)
}

// UpdateStatus replaces obj's status only and returns the object as stored.
func (c *Client) UpdateStatus(ctx context.Context, obj v1alpha1.Object) (v1alpha1.Object, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, http.MethodPut, objectPath(ki, namespaceOf(obj), obj.GetMetadata().Name)+"/status", ki, obj)
}

func (c *Client) write(ctx context.Context, method, path string, ki v1alpha1.KindInfo, obj v1alpha1.Object) (v1alpha1.Object, error) {
	b, err := marshalWithType(obj)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := c.do(ctx, method, path, nil, json.RawMessage(b), &raw); err != nil {
		return nil, err
	}
	return decodeObject(ki, raw)
}

// WatchEvent is one change seen by a watch.
type WatchEvent struct {
	Type   string // ADDED, MODIFIED, DELETED, ERROR
	Object v1alpha1.Object
}

// Watch streams changes to objects of kind in namespace ("" = all) after
// revision rv ("" = from now). The channel closes when ctx ends or the stream breaks.
// A stream the server ends with an error (e.g. this client fell too far
// behind) delivers one event of Type ERROR with a nil Object before closing:
// list again and watch from the list's revision. A revision too old to resume
// from is an error (IsGone) from Watch itself.
func (c *Client) Watch(ctx context.Context, kind, namespace, rv string) (<-chan WatchEvent, error) {
	return c.WatchSelected(ctx, kind, namespace, "", rv)
}

// WatchSelected is Watch limited to objects matching labelSelector ("" = all).
func (c *Client) WatchSelected(ctx context.Context, kind, namespace, labelSelector, rv string) (<-chan WatchEvent, error) {
	ki, err := v1alpha1.LookupKind(kind)
	if err != nil {
		return nil, err
	}
	q := url.Values{"watch": {"true"}}
	if rv != "" {
		q.Set("resourceVersion", rv)
	}
	if labelSelector != "" {
		q.Set("labelSelector", labelSelector)
	}
	resp, err := c.send(ctx, http.MethodGet, collectionPath(ki, namespace), q, nil)
	if err != nil {
		return nil, err
	}
	ch := make(chan WatchEvent)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var line struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			if err := dec.Decode(&line); err != nil {
				return
			}
			ev := WatchEvent{Type: line.Type}
			if line.Type != "ERROR" {
				obj, err := decodeObject(ki, line.Object)
				if err != nil {
					ev.Type = "ERROR"
				} else {
					ev.Object = obj
				}
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
			if ev.Type == "ERROR" {
				return
			}
		}
	}()
	return ch, nil
}

// Events lists events in namespace about the object (kind, name), oldest first;
// kind and name may be empty for all events of the namespace ("" namespace = all).
func (c *Client) Events(ctx context.Context, namespace, kind, name string) ([]v1alpha1.Event, error) {
	ki, err := v1alpha1.LookupKind(v1alpha1.KindEvent)
	if err != nil {
		return nil, err
	}
	var sel []string
	if kind != "" {
		if k, err := v1alpha1.LookupKind(kind); err == nil {
			kind = k.Kind
		}
		sel = append(sel, "involvedObject.kind="+kind)
	}
	if name != "" {
		sel = append(sel, "involvedObject.name="+name)
	}
	q := url.Values{}
	if len(sel) > 0 {
		q.Set("fieldSelector", strings.Join(sel, ","))
	}
	var list v1alpha1.List[v1alpha1.Event]
	if err := c.do(ctx, http.MethodGet, collectionPath(ki, namespace), q, nil, &list); err != nil {
		return nil, err
	}
	sort.SliceStable(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		if !a.FirstSeen.Equal(b.FirstSeen) {
			return a.FirstSeen.Before(b.FirstSeen)
		}
		return a.LastSeen.Before(b.LastSeen)
	})
	return list.Items, nil
}

// Logs copies the sandbox's log to w; with follow it keeps streaming until ctx ends.
func (c *Client) Logs(ctx context.Context, namespace, name string, follow bool, w io.Writer) error {
	return c.LogsWith(ctx, namespace, name, LogOptions{Follow: follow, Tail: -1}, w)
}

// LogOptions select what Logs prints.
type LogOptions struct {
	Follow     bool
	Tail       int           // last lines only; -1 all (0 is no line)
	Timestamps bool          // prefix lines with the time they were written
	Since      time.Duration // only lines written this recently (0: all)
	Previous   bool          // the output of the run before the current one
}

// LogsWith is Logs with options.
func (c *Client) LogsWith(ctx context.Context, namespace, name string, opts LogOptions, w io.Writer) error {
	follow := opts.Follow
	q := url.Values{}
	if opts.Tail >= 0 {
		q.Set("tailLines", strconv.Itoa(opts.Tail))
	}
	if opts.Timestamps {
		q.Set("timestamps", "true")
	}
	if opts.Previous {
		q.Set("previous", "true")
	}
	if opts.Since > 0 {
		q.Set("sinceSeconds", strconv.FormatInt(int64((opts.Since+time.Second-1)/time.Second), 10))
	}
	resp, err := c.sandboxStreamQuery(ctx, namespace, name, "log", follow, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if err != nil && follow && ctx.Err() != nil {
		return nil // following ends when ctx does
	}
	return err
}

// sandboxStream opens GET .../sandboxes/NAME/<sub> (?follow=true).
func (c *Client) sandboxStream(ctx context.Context, namespace, name, sub string, follow bool) (*http.Response, error) {
	return c.sandboxStreamQuery(ctx, namespace, name, sub, follow, url.Values{})
}

func (c *Client) sandboxStreamQuery(ctx context.Context, namespace, name, sub string, follow bool, q url.Values) (*http.Response, error) {
	ki, err := v1alpha1.LookupKind(v1alpha1.KindSandbox)
	if err != nil {
		return nil, err
	}
	if follow {
		q.Set("follow", "true")
	}
	return c.send(ctx, http.MethodGet, objectPath(ki, namespace, name)+"/"+sub, q, nil)
}

// ExecOptions describes a command to run in a sandbox.
type ExecOptions struct {
	Command    []string
	Env        []string
	WorkingDir string
	Stdin      io.Reader // nil: stdin is closed at once
	Stdout     io.Writer
	Stderr     io.Writer // unused with TTY
	TTY        bool
	Term       string
	Rows, Cols uint16
	Resize     <-chan v1alpha1.WindowSize
	Signals    <-chan syscall.Signal
	// Result, if set, receives msbd's account of the end (its Reason says
	// OOMKilled when the memory limit killed the command).
	Result *v1alpha1.ExecResult
}

// Exec runs a command in a running sandbox and returns its exit code.
func (c *Client) Exec(ctx context.Context, namespace, name string, opts ExecOptions) (int, error) {
	return c.exec(ctx, namespace, name, opts)
}

// Version returns the server's version.
func (c *Client) Version(ctx context.Context) (v1alpha1.VersionInfo, error) {
	var v v1alpha1.VersionInfo
	err := c.do(ctx, http.MethodGet, "/version", nil, nil, &v)
	return v, err
}

// Info returns what msbd found on its host: drivers available and why not,
// and the host facts behind that.
func (c *Client) Info(ctx context.Context) (v1alpha1.HostInfo, error) {
	var h v1alpha1.HostInfo
	err := c.do(ctx, http.MethodGet, "/info", nil, nil, &h)
	return h, err
}
