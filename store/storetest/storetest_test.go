package storetest_test

import (
	"errors"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/store"
	"msb.dev/msb/store/storetest"
)

// TestOpen: the store works, including Secrets (which need the key file), and two
// calls give two independent stores.
func TestOpen(t *testing.T) {
	a, b := storetest.Open(t), storetest.Open(t)
	sec := &v1alpha1.Secret{
		Metadata: v1alpha1.ObjectMeta{Name: "api"},
		Spec:     v1alpha1.SecretSpec{StringData: map[string]string{"token": "s3cret"}},
	}
	if err := a.Create(sec); err != nil {
		t.Fatalf("create secret: %v", err)
	}
	var got v1alpha1.Secret
	if err := a.Get("Secret", "", "api", &got); err != nil {
		t.Fatalf("get secret: %v", err)
	}
	if got.Spec.StringData["token"] != "s3cret" {
		t.Errorf("secret data = %v, want token=s3cret", got.Spec.StringData)
	}
	if err := b.Get("Secret", "", "api", &v1alpha1.Secret{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second store: get = %v, want ErrNotFound (the stores must be independent)", err)
	}
}

// TestOpenCloseEarly: a test may close the store itself; the cleanup's Close must
// not then fail the test.
func TestOpenCloseEarly(t *testing.T) {
	st := storetest.Open(t)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}
