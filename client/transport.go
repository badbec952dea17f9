package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"msb.dev/msb/apis/v1alpha1"
)

// apiPrefix is the root of every resource path.
const apiPrefix = "/apis/" + v1alpha1.APIVersion

// UnreachableError says msbd's socket could not be connected to, and why.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	if errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM) {
		return fmt.Sprintf("cannot reach msbd at %s: permission denied (the API socket is only open to root: try sudo)", e.Socket)
	}
	return fmt.Sprintf("cannot reach msbd at %s: is msbd running? (set --socket or MSB_SOCKET)", e.Socket)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// dial connects to the API socket, turning "nothing there" into a friendly error.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err == nil {
		return conn, nil
	}
	for _, errno := range []syscall.Errno{syscall.ENOENT, syscall.ECONNREFUSED, syscall.ENOTDIR, syscall.EACCES, syscall.EPERM, syscall.ENOTSOCK} {
		if errors.Is(err, errno) {
			return nil, &UnreachableError{Socket: c.socket, Err: err}
		}
	}
	return nil, err
}

// send makes one request and returns the response if its status is 2xx (or
// 101); otherwise the answer is decoded into an *APIError.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://msbd" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *UnreachableError
		if errors.As(err, &ue) {
			return nil, ue
		}
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// do sends a request and decodes a JSON answer into out (nil: discard it).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("msbd %s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

// readAPIError decodes an error answer; one that is not a Status becomes an
// APIError with the body as message.
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var ae APIError
	if err := json.Unmarshal(b, &ae); err == nil && ae.Message != "" {
		if ae.Status == 0 {
			ae.Status = resp.StatusCode
		}
		return &ae
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Reason: reasonFor(resp.StatusCode),
		Message: fmt.Sprintf("msbd answered %d: %s", resp.StatusCode, msg)}
}

func reasonFor(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "BadRequest"
	case http.StatusNotFound:
		return "NotFound"
	case http.StatusConflict:
		return "Conflict"
	case http.StatusGone:
		return "Gone"
	case http.StatusUnprocessableEntity:
		return "Invalid"
	}
	if code >= 500 {
		return "InternalError"
	}
	return strings.ReplaceAll(http.StatusText(code), " ", "")
}

// collectionPath is the path of kind's objects in namespace ("" = all namespaces).
func collectionPath(ki v1alpha1.KindInfo, namespace string) string {
	if namespace == "" {
		return apiPrefix + "/" + ki.Plural
	}
	return apiPrefix + "/namespaces/" + url.PathEscape(namespace) + "/" + ki.Plural
}

// objectPath is the path of one object ("" namespace = the default one).
func objectPath(ki v1alpha1.KindInfo, namespace, name string) string {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	return collectionPath(ki, namespace) + "/" + url.PathEscape(name)
}

func namespaceOf(obj v1alpha1.Object) string {
	if ns := obj.GetMetadata().Namespace; ns != "" {
		return ns
	}
	return v1alpha1.DefaultNamespace
}

// decodeObject decodes one object of kind ki.
func decodeObject(ki v1alpha1.KindInfo, raw []byte) (v1alpha1.Object, error) {
	obj := ki.New()
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil, fmt.Errorf("decode %s from msbd: %w", ki.Singular, err)
	}
	return obj, nil
}

// marshalWithType encodes obj with apiVersion and kind set, without changing obj.
func marshalWithType(obj v1alpha1.Object) ([]byte, error) {
	ki, err := v1alpha1.KindOf(obj)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	tm := obj.GetTypeMeta()
	if tm.Kind != "" && tm.APIVersion != "" {
		return b, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if tm.Kind == "" {
		m["kind"], _ = json.Marshal(ki.Kind)
	}
	if tm.APIVersion == "" {
		m["apiVersion"], _ = json.Marshal(v1alpha1.APIVersion)
	}
	return json.Marshal(m)
}
