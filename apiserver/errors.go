package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"msb.dev/msb/apis/v1alpha1"
)

// status is the body of every error response (and of a DELETE that removed
// the object at once), Kubernetes style.
type status struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Status     string   `json:"status"` // Success | Failure
	Code       int      `json:"code"`
	Reason     string   `json:"reason,omitempty"`
	Message    string   `json:"message"`
	Details    []string `json:"details,omitempty"`
}

// apiError is an error with the HTTP status and reason it is answered with.
type apiError struct {
	code    int
	reason  string
	msg     string
	details []string
	cause   error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.cause }

func (e *apiError) status() status {
	st := status{APIVersion: v1alpha1.APIVersion, Kind: "Status", Status: "Failure",
		Code: e.code, Reason: e.reason, Message: e.msg, Details: e.details}
	if e.code < 300 {
		st.Status = "Success"
	}
	return st
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{code: http.StatusBadRequest, reason: "BadRequest", msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{code: http.StatusNotFound, reason: "NotFound", msg: fmt.Sprintf(format, args...)}
}

func invalid(msg string, details []string) *apiError {
	return &apiError{code: http.StatusUnprocessableEntity, reason: "Invalid", msg: msg, details: details}
}

// asAPIError turns any error into an apiError; unknown errors are 500s.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return storeError(err, "", "", "")
}

// storeError maps a store error to an API error. plural, namespace and name
// say what the request was about, for the message; they may be empty.
func storeError(err error, plural, namespace, name string) *apiError {
	what := "object"
	if plural != "" && name != "" {
		what = fmt.Sprintf("%s %q", plural, name)
		if namespace != "" {
			what += fmt.Sprintf(" in namespace %q", namespace)
		}
	}
	switch {
	case errors.Is(err, v1alpha1.ErrNotFound):
		msg := what + " not found"
		if plural != "" && name != "" {
			msg = fmt.Sprintf("%s %q not found", plural, name)
			if namespace != "" {
				msg += fmt.Sprintf(" in namespace %q", namespace)
			}
		}
		return &apiError{code: http.StatusNotFound, reason: "NotFound", msg: msg, cause: err}
	case errors.Is(err, v1alpha1.ErrAlreadyExists):
		return &apiError{code: http.StatusConflict, reason: "AlreadyExists",
			msg: what + " already exists", details: []string{err.Error()}, cause: err}
	case errors.Is(err, v1alpha1.ErrConflict):
		return &apiError{code: http.StatusConflict, reason: "Conflict",
			msg:     what + " was modified since it was read (stale resourceVersion): get it again and retry",
			details: []string{err.Error()}, cause: err}
	case errors.Is(err, v1alpha1.ErrGone):
		return &apiError{code: http.StatusGone, reason: "Gone",
			msg: err.Error() + ": list again and watch from the list's resourceVersion", cause: err}
	case errors.Is(err, v1alpha1.ErrInvalid):
		return &apiError{code: http.StatusUnprocessableEntity, reason: "Invalid", msg: err.Error(), cause: err}
	}
	return &apiError{code: http.StatusInternalServerError, reason: "InternalError",
		msg: "internal error: " + err.Error(), cause: err}
}

// writeJSON writes v as the response body with code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
