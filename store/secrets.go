package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// encPrefix marks an encrypted secret value: "enc:v1:" + base64(nonce ‖ ciphertext).
// The AES-256-GCM additional data binds the ciphertext to its place
// ("Secret/<ns>/<name>/<field>/<key>"), so values cannot be moved between
// secrets or keys by editing the file.
const encPrefix = "enc:v1:"

// loadOrCreateKey reads a 32-byte key (64 hex digits, or 32 raw bytes) from
// path, or creates one with mode 0600 (directory 0700) when path is missing.
func loadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read secret key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret key %s is readable by group or others (mode %#o): run chmod 600 %s", path, perm, path)
	}
	if s := strings.TrimSpace(string(b)); len(s) == 64 {
		if key, err := hex.DecodeString(s); err == nil {
			return key, nil
		}
	}
	if len(b) == 32 {
		return b, nil
	}
	return nil, fmt.Errorf("secret key %s: want 64 hex digits (a 256-bit key), got %d bytes; move it away to have a new key created (existing Secrets then become unreadable)", path, len(b))
}

func createKey(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create secret key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // created concurrently: use that one
		return loadOrCreateKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create secret key: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create secret key %s: %w", path, err)
	}
	return key, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func secretAAD(ns, name, field, key string) []byte {
	return []byte(v1alpha1.Key(v1alpha1.KindSecret, ns, name) + "/" + field + "/" + key)
}

// errNoKey is returned when a Secret with values is written or read by a
// store opened without WithSecretKeyFile.
func (s *Store) errNoKey(ns, name string) error {
	return fmt.Errorf("secret %s/%s: the store has no secret key (open it with WithSecretKeyFile); refusing to handle secret values in plain text", ns, name)
}

// sealSecret returns a copy of sec whose values are encrypted; sec is not changed.
func (s *Store) sealSecret(sec *v1alpha1.Secret) (*v1alpha1.Secret, error) {
	if len(sec.Spec.StringData) == 0 && len(sec.Spec.Data) == 0 {
		return sec, nil
	}
	m := &sec.Metadata
	if s.aead == nil {
		return nil, s.errNoKey(m.Namespace, m.Name)
	}
	out := *sec
	seal := func(field string, in map[string]string) map[string]string {
		if in == nil {
			return nil
		}
		enc := make(map[string]string, len(in))
		for k, v := range in {
			nonce := make([]byte, s.aead.NonceSize())
			if _, err := rand.Read(nonce); err != nil {
				panic(err) // crypto/rand never fails on supported platforms
			}
			ct := s.aead.Seal(nonce, nonce, []byte(v), secretAAD(m.Namespace, m.Name, field, k))
			enc[k] = encPrefix + base64.RawStdEncoding.EncodeToString(ct)
		}
		return enc
	}
	out.Spec.StringData = seal("stringData", sec.Spec.StringData)
	out.Spec.Data = seal("data", sec.Spec.Data)
	return &out, nil
}

// openSecret decrypts sec's values in place.
func (s *Store) openSecret(sec *v1alpha1.Secret) error {
	if len(sec.Spec.StringData) == 0 && len(sec.Spec.Data) == 0 {
		return nil
	}
	m := &sec.Metadata
	if s.aead == nil {
		return s.errNoKey(m.Namespace, m.Name)
	}
	open := func(field string, vals map[string]string) error {
		for k, v := range vals {
			enc, ok := strings.CutPrefix(v, encPrefix)
			if !ok {
				return fmt.Errorf("secret %s/%s: %s.%s is not encrypted in the store", m.Namespace, m.Name, field, k)
			}
			ct, err := base64.RawStdEncoding.DecodeString(enc)
			if err != nil || len(ct) < s.aead.NonceSize() {
				return fmt.Errorf("secret %s/%s: %s.%s: malformed ciphertext", m.Namespace, m.Name, field, k)
			}
			n := s.aead.NonceSize()
			pt, err := s.aead.Open(nil, ct[:n], ct[n:], secretAAD(m.Namespace, m.Name, field, k))
			if err != nil {
				return fmt.Errorf("secret %s/%s: %s.%s: cannot decrypt (wrong secret key file?): %w", m.Namespace, m.Name, field, k, err)
			}
			vals[k] = string(pt)
		}
		return nil
	}
	if err := open("stringData", sec.Spec.StringData); err != nil {
		return err
	}
	return open("data", sec.Spec.Data)
}
