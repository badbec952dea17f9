package v1alpha1

import (
	"fmt"
	"strings"
)

// Matches reports whether labels has every pair of s.MatchLabels. An empty
// selector matches everything.
func (s LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// MatchLabels reports whether labels satisfy selector, a comma-separated list
// of requirements as in kubectl -l: "a=b" (or "a==b"), "a!=b" (a missing or
// different), "a" (a present) and "!a" (a absent). An empty selector matches
// everything. A malformed selector is an error whatever the labels.
func MatchLabels(selector string, labels map[string]string) (bool, error) {
	reqs, err := parseSelector(selector)
	if err != nil {
		return false, err
	}
	for _, r := range reqs {
		if !r.matches(labels) {
			return false, nil
		}
	}
	return true, nil
}

type selectorOp int

const (
	opEquals selectorOp = iota
	opNotEquals
	opExists
	opNotExists
)

type requirement struct {
	key, value string
	op         selectorOp
}

func (r requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.value
	case opNotEquals:
		return !ok || v != r.value
	case opExists:
		return ok
	default:
		return !ok
	}
}

const selectorHelp = "want comma-separated a=b, a!=b, a or !a"

func parseSelector(selector string) ([]requirement, error) {
	if strings.TrimSpace(selector) == "" {
		return nil, nil
	}
	var reqs []requirement
	for _, term := range strings.Split(selector, ",") {
		term = strings.TrimSpace(term)
		var r requirement
		switch {
		case term == "":
			return nil, fmt.Errorf("invalid selector %q: empty requirement; %s", selector, selectorHelp)
		case strings.Contains(term, "("):
			return nil, fmt.Errorf("invalid selector %q: set-based requirements (in, notin) are not supported; %s", selector, selectorHelp)
		case strings.HasPrefix(term, "!"):
			r = requirement{key: strings.TrimSpace(term[1:]), op: opNotExists}
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opNotEquals}
		case strings.Contains(term, "=="):
			k, v, _ := strings.Cut(term, "==")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opEquals}
		case strings.Contains(term, "="):
			k, v, _ := strings.Cut(term, "=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opEquals}
		default:
			r = requirement{key: term, op: opExists}
		}
		if r.key == "" {
			return nil, fmt.Errorf("invalid selector %q: requirement %q has no key; %s", selector, term, selectorHelp)
		}
		if msg := labelKeyError(r.key); msg != "" {
			return nil, fmt.Errorf("invalid selector %q: invalid label key %q: %s", selector, r.key, msg)
		}
		if r.value != "" && (len(r.value) > 63 || !labelNameRE.MatchString(r.value)) {
			return nil, fmt.Errorf("invalid selector %q: invalid label value %q: letters, digits, '-', '_' and '.', starting and ending with a letter or digit", selector, r.value)
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}
