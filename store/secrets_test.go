package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
)

func TestSecretsEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	path, key := filepath.Join(dir, "msb.db"), filepath.Join(dir, "keys", "secrets.key")
	s, err := Open(path, WithSecretKeyFile(key))
	must(t, err)

	plain := []string{"sk-plain-value-0123456789", "second-value-abcdefghijkl", "applied-value-zyxwvutsrq", "updated-value-5555555555"}
	data := base64.StdEncoding.EncodeToString([]byte("binary-secret-in-data-field"))
	sec := &v1alpha1.Secret{
		Metadata: v1alpha1.ObjectMeta{Name: "openai"},
		Spec: v1alpha1.SecretSpec{
			StringData:   map[string]string{"apiKey": plain[0], "other": plain[1]},
			Data:         map[string]string{"bin": data},
			AllowedHosts: []string{"api.example.com"},
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, 0)
	must(t, err)
	must(t, s.Create(sec))
	if sec.Spec.StringData["apiKey"] != plain[0] {
		t.Fatalf("Create changed the caller's value: %q", sec.Spec.StringData["apiKey"])
	}

	var got v1alpha1.Secret
	must(t, s.Get("Secret", "", "openai", &got))
	if got.Spec.StringData["apiKey"] != plain[0] || got.Spec.Data["bin"] != data {
		t.Fatalf("Get = %v %v", got.Spec.StringData, got.Spec.Data)
	}
	objs, _, err := s.List("Secret", "")
	must(t, err)
	if objs[0].(*v1alpha1.Secret).Spec.StringData["other"] != plain[1] {
		t.Fatal("List did not decrypt")
	}
	if ev := recv(t, ch, 1)[0]; ev.Object.(*v1alpha1.Secret).Spec.StringData["apiKey"] != plain[0] {
		t.Fatal("Watch did not decrypt")
	}

	// Apply with the same plain values is unchanged (compared in plain text,
	// not by ciphertext, which differs on every write).
	same := &v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "openai"}, Spec: got.Spec}
	res, err := s.Apply([]v1alpha1.Object{same}, false)
	must(t, err)
	if res[0].Action != ActionUnchanged {
		t.Fatalf("apply of equal secret: %s", res[0].Action)
	}
	changed := &v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "openai"}, Spec: got.Spec}
	changed.Spec.StringData = map[string]string{"apiKey": plain[2], "other": plain[1]}
	res, err = s.Apply([]v1alpha1.Object{changed}, false)
	must(t, err)
	if res[0].Action != ActionConfigured {
		t.Fatalf("apply of changed secret: %s", res[0].Action)
	}
	must(t, s.Get("Secret", "", "openai", &got))
	got.Spec.StringData["apiKey"] = plain[3]
	must(t, s.Update(&got))
	must(t, s.Close())

	raw, err := os.ReadFile(path)
	must(t, err)
	for _, p := range append(plain, data, "binary-secret-in-data-field") {
		if bytes.Contains(raw, []byte(p)) {
			t.Errorf("database file contains the plain value %q", p)
		}
	}
	if !bytes.Contains(raw, []byte(encPrefix)) || !bytes.Contains(raw, []byte("api.example.com")) {
		t.Error("database file has no ciphertext (or no secret at all)")
	}

	fi, err := os.Stat(key)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(key))
	must(t, err)
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %#o, want 0700", di.Mode().Perm())
	}

	t.Run("without the key", func(t *testing.T) {
		s, err := Open(path)
		must(t, err)
		defer s.Close()
		err = s.Get("Secret", "", "openai", &v1alpha1.Secret{})
		if err == nil || !strings.Contains(err.Error(), "WithSecretKeyFile") {
			t.Fatalf("get without key: %v", err)
		}
		err = s.Create(&v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "x"}, Spec: v1alpha1.SecretSpec{StringData: map[string]string{"k": "v"}}})
		if err == nil {
			t.Fatal("stored a secret value without a key")
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.key")
		s, err := Open(path, WithSecretKeyFile(other))
		must(t, err)
		defer s.Close()
		if err := s.Get("Secret", "", "openai", &v1alpha1.Secret{}); err == nil || !strings.Contains(err.Error(), "wrong secret key") {
			t.Fatalf("get with wrong key: %v", err)
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		must(t, os.Chmod(key, 0o644))
		defer os.Chmod(key, 0o600)
		if _, err := Open(path, WithSecretKeyFile(key)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("open with a world-readable key: %v", err)
		}
	})
}
