package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// applyRequest is the body of POST /apply.
type applyRequest struct {
	APIVersion string            `json:"apiVersion,omitempty"`
	Kind       string            `json:"kind,omitempty"` // "List", optional
	Items      []json.RawMessage `json:"items"`
}

// applyResult gives store.ApplyResult the JSON names the client reads,
// whatever tags the store puts on it.
type applyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

// apply validates every item and, only if all are valid, writes them in one
// store transaction. The 422 lists every problem of every item.
func (s *server) apply(w http.ResponseWriter, r *http.Request) error {
	dryRun := false
	switch v := r.URL.Query().Get("dryRun"); v {
	case "":
	case "All", "all", "true":
		dryRun = true
	default:
		return badRequest("dryRun=%q: want All", v)
	}
	var req applyRequest
	if err := decodeStrict(http.MaxBytesReader(w, r.Body, maxBodyBytes), &req); err != nil {
		return badRequest("malformed apply body: %v", err)
	}

	var (
		objs    []v1alpha1.Object
		details []string
		seen    = map[string]bool{}
	)
	for i, raw := range req.Items {
		obj, errs := decodeItem(i, raw)
		if obj == nil {
			details = append(details, errs...)
			continue
		}
		label := obj.GetTypeMeta().Kind + "/" + obj.GetMetadata().Name
		if len(errs) > 0 {
			details = append(details, errs...)
			continue
		}
		if err := validate(obj); err != nil {
			details = append(details, asAPIError(err).details...)
			continue
		}
		key := v1alpha1.KeyOf(obj)
		if seen[key] {
			details = append(details, fmt.Sprintf("%s: appears more than once in namespace %q in this apply", label, obj.GetMetadata().Namespace))
			continue
		}
		seen[key] = true
		admit(obj)
		objs = append(objs, obj)
	}
	if len(details) > 0 {
		return invalid(fmt.Sprintf("apply: %d problem(s) in %d object(s); nothing was applied: %s",
			len(details), len(req.Items), strings.Join(details, "; ")), details)
	}

	results, err := s.store.Apply(objs, dryRun)
	if err != nil {
		return storeError(err, "", "", "")
	}
	resp := struct {
		Results []applyResult `json:"results"`
	}{Results: make([]applyResult, len(results))}
	for i, res := range results {
		resp.Results[i] = applyResult{Kind: res.Kind, Namespace: res.Namespace, Name: res.Name, Action: res.Action}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// decodeItem decodes apply item i. It returns a nil object when the item
// cannot even be identified, and the problems found either way, each
// prefixed with "Kind/name: " (or "item N: " before the kind is known).
func decodeItem(i int, raw json.RawMessage) (v1alpha1.Object, []string) {
	var head struct {
		v1alpha1.TypeMeta
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, []string{fmt.Sprintf("item %d: not an object: %v", i, err)}
	}
	label := fmt.Sprintf("item %d", i)
	if head.Kind != "" {
		label = head.Kind + "/" + head.Metadata.Name
	}
	var ki v1alpha1.KindInfo
	for _, k := range v1alpha1.Kinds {
		if k.Kind == head.Kind {
			ki = k
		}
	}
	switch {
	case head.Kind == "":
		return nil, []string{label + ": kind is missing"}
	case ki.Kind == "" || ki.Kind == v1alpha1.KindEvent:
		return nil, []string{fmt.Sprintf("%s: kind %q cannot be applied (want %s, %s or %s)",
			label, head.Kind, v1alpha1.KindSandbox, v1alpha1.KindNetworkPolicy, v1alpha1.KindSecret)}
	}
	var errs []string
	if head.APIVersion != v1alpha1.APIVersion {
		errs = append(errs, fmt.Sprintf("%s: apiVersion %q is not served (want %s)", label, head.APIVersion, v1alpha1.APIVersion))
	}
	obj := ki.New()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		errs = append(errs, fmt.Sprintf("%s: %v", label, err))
	}
	if m := obj.GetMetadata(); m.Namespace == "" {
		m.Namespace = v1alpha1.DefaultNamespace
	}
	return obj, errs
}
