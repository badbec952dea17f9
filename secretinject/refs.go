package secretinject

import "fmt"

// Ref names one key of a Secret that a sandbox's environment refers to.
type Ref struct {
	// Env is the variable that refers to it (for messages).
	Env                    string
	Namespace, Secret, Key string
}

// Keys reports whether the Secret named by ref exists and which keys it
// has; found is false when there is no such Secret. It is the caller's view
// of its store: this package reads none.
type Keys func(namespace, secret string) (keys map[string]bool, found bool, err error)

// RefError is a reference that cannot be satisfied yet: the Secret or the
// key is missing. The sandbox waits for it (it is not started with a
// placeholder that could never be substituted).
type RefError struct {
	Ref Ref
	// MissingKey is true when the Secret exists but lacks the key.
	MissingKey bool
}

func (e *RefError) Error() string {
	if e.MissingKey {
		return fmt.Sprintf("env %s: secret %q has no key %q", e.Ref.Env, e.Ref.Secret, e.Ref.Key)
	}
	return fmt.Sprintf("env %s: secret %q not found in namespace %q", e.Ref.Env, e.Ref.Secret, e.Ref.Namespace)
}

// Resolve checks ref through keys and returns the placeholder sandbox uid
// sees for it, or a *RefError.
func Resolve(uid string, ref Ref, keys Keys) (string, error) {
	have, found, err := keys(ref.Namespace, ref.Secret)
	if err != nil {
		return "", err
	}
	if !found || !have[ref.Key] {
		return "", &RefError{Ref: ref, MissingKey: found}
	}
	return Placeholder(uid, ref.Namespace, ref.Secret, ref.Key), nil
}
