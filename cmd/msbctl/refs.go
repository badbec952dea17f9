package main

import (
	"fmt"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// objRef names one object on the command line.
type objRef struct {
	kind v1alpha1.KindInfo
	name string
}

func (r objRef) String() string { return r.kind.Singular + "/" + r.name }

// parseRefs reads "KIND [NAME...]" or "KIND/NAME [KIND/NAME...]". kind is
// set in the first form (refs may then be empty: every object of the kind).
func parseRefs(args []string) (kind *v1alpha1.KindInfo, refs []objRef, err error) {
	if len(args) == 0 {
		return nil, nil, usagef("you must name a resource type (sandbox, networkpolicy, secret, event) or KIND/NAME")
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			r, err := parseKindName(a)
			if err != nil {
				return nil, nil, err
			}
			refs = append(refs, r)
		}
		return nil, refs, nil
	}
	ki, err := v1alpha1.LookupKind(args[0])
	if err != nil {
		return nil, nil, err
	}
	for _, a := range args[1:] {
		if strings.Contains(a, "/") {
			return nil, nil, usagef("%q: give either KIND NAME... or KIND/NAME..., not both", a)
		}
		if a == "" {
			return nil, nil, usagef("empty name")
		}
		refs = append(refs, objRef{kind: ki, name: a})
	}
	return &ki, refs, nil
}

// parseKindName reads "KIND/NAME".
func parseKindName(s string) (objRef, error) {
	k, n, ok := strings.Cut(s, "/")
	if !ok || k == "" || n == "" || strings.Contains(n, "/") {
		return objRef{}, usagef("%q: want KIND/NAME, e.g. sandbox/web", s)
	}
	ki, err := v1alpha1.LookupKind(k)
	if err != nil {
		return objRef{}, err
	}
	return objRef{kind: ki, name: n}, nil
}

// parseSandboxName reads NAME or KIND/NAME where the kind must be a Sandbox
// (logs and exec).
func parseSandboxName(s string) (string, error) {
	if !strings.Contains(s, "/") {
		if s == "" {
			return "", usagef("empty sandbox name")
		}
		return s, nil
	}
	r, err := parseKindName(s)
	if err != nil {
		return "", err
	}
	if r.kind.Kind != v1alpha1.KindSandbox {
		return "", usagef("%q: only sandboxes have logs and exec", s)
	}
	return r.name, nil
}

// notFound is the message for a missing object, as kubectl words it.
func notFound(kind v1alpha1.KindInfo, namespace, name string) error {
	return fmt.Errorf("%s %q not found in namespace %q", kind.Singular, name, namespace)
}
