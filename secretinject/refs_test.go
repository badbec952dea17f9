package secretinject

import (
	"errors"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	keys := func(ns, name string) (map[string]bool, bool, error) {
		switch {
		case ns == "default" && name == "llm":
			return map[string]bool{"apiKey": true}, true, nil
		case name == "broken":
			return nil, false, errors.New("store closed")
		}
		return nil, false, nil
	}
	ref := Ref{Env: "KEY", Namespace: "default", Secret: "llm", Key: "apiKey"}
	got, err := Resolve("uid-1", ref, keys)
	if err != nil || got != Placeholder("uid-1", "default", "llm", "apiKey") {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	for _, tc := range []struct {
		ref  Ref
		want string
	}{
		{Ref{Env: "KEY", Namespace: "default", Secret: "llm", Key: "other"}, `env KEY: secret "llm" has no key "other"`},
		{Ref{Env: "KEY", Namespace: "prod", Secret: "llm", Key: "apiKey"}, `env KEY: secret "llm" not found in namespace "prod"`},
	} {
		_, err := Resolve("uid-1", tc.ref, keys)
		var re *RefError
		if !errors.As(err, &re) || err.Error() != tc.want {
			t.Errorf("Resolve(%+v) = %v, want a RefError %q", tc.ref, err, tc.want)
		}
	}
	_, err = Resolve("uid-1", Ref{Namespace: "default", Secret: "broken", Key: "k"}, keys)
	var re *RefError
	if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), "store closed") {
		t.Errorf("a failing lookup gave %v, want its error (not a RefError)", err)
	}
}
