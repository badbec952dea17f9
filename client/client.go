// Package client is the Go client of the msbd API (HTTP over a unix socket).
// msbctl, the end-to-end tests and SDK users talk to msbd only through it.
package client

import (
	"context"
	"io"
	"syscall"

	"msb.dev/msb/apis/v1alpha1"
)

// DefaultSocket is where msbd listens unless told otherwise.
const DefaultSocket = "/run/msb/msbd.sock"

// Client talks to one msbd.
type Client struct {
	socket string
}

// New returns a client for the msbd API socket at path.
func New(socketPath string) *Client { return &Client{socket: socketPath} }

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
	panic("TODO")
}

// Get returns one object. kind is a Kind name ("Sandbox").
func (c *Client) Get(ctx context.Context, kind, namespace, name string) (v1alpha1.Object, error) {
	panic("TODO")
}

// List returns objects of kind in namespace ("" = all namespaces) matching the
// label selector ("" = all; "a=b,c=d" or "a!=b"), and the revision it was read at.
func (c *Client) List(ctx context.Context, kind, namespace, labelSelector string) ([]v1alpha1.Object, string, error) {
	panic("TODO")
}

// Delete asks for deletion; a Sandbox goes away once its finalizer ran.
func (c *Client) Delete(ctx context.Context, kind, namespace, name string) error {
	panic("TODO")
}

// WatchEvent is one change seen by a watch.
type WatchEvent struct {
	Type   string // ADDED, MODIFIED, DELETED, ERROR
	Object v1alpha1.Object
}

// Watch streams changes to objects of kind in namespace ("" = all) after
// revision rv ("" = from now). The channel closes when ctx ends or the stream breaks.
func (c *Client) Watch(ctx context.Context, kind, namespace, rv string) (<-chan WatchEvent, error) {
	panic("TODO")
}

// Events lists events in namespace about the object (kind, name), oldest first;
// kind and name may be empty for all events of the namespace ("" namespace = all).
func (c *Client) Events(ctx context.Context, namespace, kind, name string) ([]v1alpha1.Event, error) {
	panic("TODO")
}

// Logs copies the sandbox's log to w; with follow it keeps streaming until ctx ends.
func (c *Client) Logs(ctx context.Context, namespace, name string, follow bool, w io.Writer) error {
	panic("TODO")
}

// WindowSize is a terminal size.
type WindowSize struct{ Rows, Cols uint16 }

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
	Resize     <-chan WindowSize
	Signals    <-chan syscall.Signal
}

// Exec runs a command in a running sandbox and returns its exit code.
func (c *Client) Exec(ctx context.Context, namespace, name string, opts ExecOptions) (int, error) {
	panic("TODO")
}

// VersionInfo describes the server.
type VersionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Driver    string `json:"driver"`
	Isolation string `json:"isolation"`
}

// Version returns the server's version.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) { panic("TODO") }
