package v1alpha1

import (
	"fmt"
	"strings"
)

// Object is any stored resource. The store, the API server and the CLI handle
// objects through this interface and the Kinds table, never by kind switches.
type Object interface {
	GetTypeMeta() *TypeMeta
	GetMetadata() *ObjectMeta
}

func (o *Sandbox) GetTypeMeta() *TypeMeta         { return &o.TypeMeta }
func (o *Sandbox) GetMetadata() *ObjectMeta       { return &o.Metadata }
func (o *NetworkPolicy) GetTypeMeta() *TypeMeta   { return &o.TypeMeta }
func (o *NetworkPolicy) GetMetadata() *ObjectMeta { return &o.Metadata }
func (o *Secret) GetTypeMeta() *TypeMeta          { return &o.TypeMeta }
func (o *Secret) GetMetadata() *ObjectMeta        { return &o.Metadata }
func (o *Event) GetTypeMeta() *TypeMeta           { return &o.TypeMeta }
func (o *Event) GetMetadata() *ObjectMeta         { return &o.Metadata }

// KindInfo describes one resource kind: its names on the command line and in
// API paths.
type KindInfo struct {
	Kind       string   // Sandbox
	Plural     string   // sandboxes (the API path segment)
	Singular   string   // sandbox
	ShortNames []string // sb
	New        func() Object
}

// Kinds lists every kind the API serves, in apply order (dependencies first:
// Secrets and NetworkPolicies before the Sandboxes that use them).
var Kinds = []KindInfo{
	{Kind: KindSecret, Plural: "secrets", Singular: "secret", New: func() Object { return &Secret{} }},
	{Kind: KindNetworkPolicy, Plural: "networkpolicies", Singular: "networkpolicy", ShortNames: []string{"netpol"}, New: func() Object { return &NetworkPolicy{} }},
	{Kind: KindSandbox, Plural: "sandboxes", Singular: "sandbox", ShortNames: []string{"sb"}, New: func() Object { return &Sandbox{} }},
	{Kind: KindEvent, Plural: "events", Singular: "event", ShortNames: []string{"ev"}, New: func() Object { return &Event{} }},
}

// LookupKind finds a kind by any of its names, case-insensitively: Kind,
// plural, singular or short name ("Sandbox", "sandboxes", "sandbox", "sb").
func LookupKind(name string) (KindInfo, error) {
	n := strings.ToLower(name)
	for _, k := range Kinds {
		if n == strings.ToLower(k.Kind) || n == k.Plural || n == k.Singular {
			return k, nil
		}
		for _, s := range k.ShortNames {
			if n == s {
				return k, nil
			}
		}
	}
	return KindInfo{}, fmt.Errorf("unknown resource type %q (known: sandbox|sb, networkpolicy|netpol, secret, event)", name)
}

// Key is the store and queue key of an object: "Kind/namespace/name".
func Key(kind, namespace, name string) string { return kind + "/" + namespace + "/" + name }

// KeyOf returns the key of obj.
func KeyOf(obj Object) string {
	m := obj.GetMetadata()
	return Key(obj.GetTypeMeta().Kind, m.Namespace, m.Name)
}

// SplitKey is the inverse of Key.
func SplitKey(key string) (kind, namespace, name string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("malformed key %q", key)
	}
	return parts[0], parts[1], parts[2], nil
}

// DefaultNamespace is used when metadata.namespace is empty.
const DefaultNamespace = "default"

// FinalizerSandbox is put on every Sandbox so deletion waits until the
// reconciler has removed everything the sandbox owned.
const FinalizerSandbox = "msb.dev/sandbox-cleanup"

// SetCondition sets or updates the condition of type c.Type, keeping
// LastTransitionTime unless the status changed. It reports whether anything changed.
func SetCondition(conds *[]Condition, c Condition) bool {
	for i := range *conds {
		old := &(*conds)[i]
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			return false
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		*old = c
		return true
	}
	*conds = append(*conds, c)
	return true
}

// FindCondition returns the condition of type t, or nil.
func FindCondition(conds []Condition, t string) *Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// RemoveCondition drops the condition of type t; it reports whether there was one.
func RemoveCondition(conds *[]Condition, t string) bool {
	for i := range *conds {
		if (*conds)[i].Type == t {
			*conds = append((*conds)[:i], (*conds)[i+1:]...)
			return true
		}
	}
	return false
}
