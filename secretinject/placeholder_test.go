package secretinject

import "testing"

func TestPlaceholder(t *testing.T) {
	a := Placeholder("uid-1", "default", "llm", "apiKey")
	if !IsPlaceholder(a) {
		t.Fatalf("%q is not recognised as a placeholder", a)
	}
	if a != Placeholder("uid-1", "default", "llm", "apiKey") {
		t.Error("placeholder is not stable")
	}
	// Every input part changes it; joining with a separator keeps
	// ("a","bc") and ("ab","c") apart.
	for _, other := range []string{
		Placeholder("uid-2", "default", "llm", "apiKey"),
		Placeholder("uid-1", "other", "llm", "apiKey"),
		Placeholder("uid-1", "default", "llm2", "apiKey"),
		Placeholder("uid-1", "default", "llm", "apiKey2"),
		Placeholder("uid-1", "default", "ll", "mapiKey"),
	} {
		if other == a {
			t.Errorf("placeholder %q does not depend on every part", a)
		}
	}
	for _, s := range []string{"", "sk-live-123", PlaceholderPrefix, PlaceholderPrefix + "zz", a + "0"} {
		if IsPlaceholder(s) {
			t.Errorf("IsPlaceholder(%q) = true", s)
		}
	}
}
