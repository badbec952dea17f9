package apiserver

import (
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// filter selects the objects a list or watch returns: one kind, a namespace
// ("" = all), a label selector and a field selector.
type filter struct {
	kind      v1alpha1.KindInfo
	namespace string
	labels    string
	fields    []fieldReq
}

// fieldReq is one term of a field selector: field=value or field!=value.
type fieldReq struct {
	field, value string
	negate       bool
}

// fieldValue returns the value of a field a field selector may name, and
// whether obj's kind has that field.
func fieldValue(obj v1alpha1.Object, field string) (string, bool) {
	m := obj.GetMetadata()
	switch field {
	case "metadata.name":
		return m.Name, true
	case "metadata.namespace":
		return m.Namespace, true
	}
	ev, ok := obj.(*v1alpha1.Event)
	if !ok {
		return "", false
	}
	switch field {
	case "involvedObject.kind":
		return ev.InvolvedObject.Kind, true
	case "involvedObject.name":
		return ev.InvolvedObject.Name, true
	case "involvedObject.namespace":
		return ev.InvolvedObject.Namespace, true
	case "involvedObject.uid":
		return ev.InvolvedObject.UID, true
	case "type":
		return ev.Type, true
	case "reason":
		return ev.Reason, true
	}
	return "", false
}

func newFilter(ki v1alpha1.KindInfo, namespace, labelSelector, fieldSelector string) (*filter, error) {
	f := &filter{kind: ki, namespace: namespace, labels: strings.TrimSpace(labelSelector)}
	if f.labels != "" {
		// Check the selector's syntax once, up front, so a bad one is a 400.
		if _, err := v1alpha1.MatchLabels(f.labels, nil); err != nil {
			return nil, badRequest("labelSelector %q: %v", labelSelector, err)
		}
	}
	for _, term := range strings.Split(fieldSelector, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		var req fieldReq
		switch {
		case strings.Contains(term, "!="):
			req.field, req.value, _ = strings.Cut(term, "!=")
			req.negate = true
		case strings.Contains(term, "=="):
			req.field, req.value, _ = strings.Cut(term, "==")
		case strings.Contains(term, "="):
			req.field, req.value, _ = strings.Cut(term, "=")
		default:
			return nil, badRequest("fieldSelector term %q: want field=value or field!=value", term)
		}
		req.field, req.value = strings.TrimSpace(req.field), strings.TrimSpace(req.value)
		if _, known := fieldValue(ki.New(), req.field); !known {
			fields := "metadata.name, metadata.namespace"
			if ki.Kind == v1alpha1.KindEvent {
				fields += ", involvedObject.kind, involvedObject.name, involvedObject.namespace, involvedObject.uid, type, reason"
			}
			return nil, badRequest("fieldSelector: %s has no field %q (known: %s)", ki.Plural, req.field, fields)
		}
		f.fields = append(f.fields, req)
	}
	return f, nil
}

// match reports whether obj passes the filter.
func (f *filter) match(obj v1alpha1.Object) (bool, error) {
	m := obj.GetMetadata()
	if f.namespace != "" && m.Namespace != f.namespace {
		return false, nil
	}
	for _, req := range f.fields {
		v, _ := fieldValue(obj, req.field)
		if (v == req.value) == req.negate {
			return false, nil
		}
	}
	if f.labels != "" {
		ok, err := v1alpha1.MatchLabels(f.labels, m.Labels)
		if err != nil {
			return false, badRequest("labelSelector %q: %v", f.labels, err)
		}
		return ok, nil
	}
	return true, nil
}

// involvedObject is the reference an events field selector names, for
// store.Events; nil unless kind, name and namespace are known (match filters
// the result either way).
func (f *filter) involvedObject() *v1alpha1.ObjectReference {
	var ref v1alpha1.ObjectReference
	for _, req := range f.fields {
		if req.negate {
			continue
		}
		switch req.field {
		case "involvedObject.kind":
			ref.Kind = req.value
		case "involvedObject.name":
			ref.Name = req.value
		case "involvedObject.namespace":
			ref.Namespace = req.value
		case "involvedObject.uid":
			ref.UID = req.value
		}
	}
	if ref.Namespace == "" {
		ref.Namespace = f.namespace
	}
	// Across all namespaces the store cannot look an object up: filter instead.
	if ref.Kind == "" || ref.Name == "" || ref.Namespace == "" {
		return nil
	}
	return &ref
}
