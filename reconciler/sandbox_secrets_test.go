package reconciler

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/secretinject"
)

// A sandbox referencing a Secret trusts msbd's CA beside its image's roots,
// and the proxy gets the value behind its placeholder — the current one: a
// re-applied Secret applies without a restart.
func TestSandboxSecretInjection(t *testing.T) {
	h := newHarness(t)
	ca, err := secretinject.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sets := &secretinject.Sets{}
	h.r.Secrets = &SecretInjection{CA: ca, Sets: sets}
	layer := h.mkLayer("roots", map[string]string{"etc/ssl/certs/ca-certificates.crt": "# the image's own roots\n"})
	h.imgs.imgs[testImage].Layers = append(h.imgs.imgs[testImage].Layers, layer)
	sec := &v1alpha1.Secret{Metadata: v1alpha1.ObjectMeta{Name: "llm", Namespace: "default"},
		Spec: v1alpha1.SecretSpec{StringData: map[string]string{"apiKey": "sk-first"}, AllowedHosts: []string{"api.example.com"}}}
	if err := h.st.Create(sec); err != nil {
		t.Fatal(err)
	}
	sb := h.create("agent", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{{Name: "KEY", ValueFrom: &v1alpha1.EnvVarSource{SecretKeyRef: &v1alpha1.SecretKeySelector{Name: "llm", Key: "apiKey"}}}}
	})
	h.mustReconcile("agent")
	spec := h.drv.Created()[0]
	var bundle string
	for _, f := range spec.Files {
		if f.Path == "/etc/ssl/certs/ca-certificates.crt" {
			bundle = string(f.Data)
		}
	}
	if !strings.HasPrefix(bundle, "# the image's own roots\n") || !strings.Contains(bundle, string(ca.CertPEM())) {
		t.Fatalf("trust bundle %q: want the image's roots then msbd's CA", bundle)
	}
	if !slices.Contains(spec.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") || !slices.Contains(spec.Env, "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("env %q lacks the trust variables", spec.Env)
	}
	for _, e := range spec.Env {
		if strings.Contains(e, "sk-first") {
			t.Fatalf("the value reached the sandbox's environment: %q", e)
		}
	}
	placeholder := secretinject.Placeholder(sb.Metadata.UID, "default", "llm", "apiKey")
	sent := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://api.example.com/v1", nil)
		req.Header.Set("Authorization", "Bearer "+placeholder)
		if err := sets.Get(sb.Metadata.UID).Rewrite(req, "api.example.com"); err != nil {
			t.Fatal(err)
		}
		return req.Header.Get("Authorization")
	}
	if got := sent(); got != "Bearer sk-first" {
		t.Fatalf("the proxy would send %q", got)
	}
	sec = &v1alpha1.Secret{}
	if err := h.st.Get(v1alpha1.KindSecret, "default", "llm", sec); err != nil {
		t.Fatal(err)
	}
	sec.Spec.StringData["apiKey"] = "sk-rotated"
	if err := h.st.Update(sec); err != nil {
		t.Fatal(err)
	}
	h.drv.Reset()
	h.mustReconcile("agent")
	if got := sent(); got != "Bearer sk-rotated" {
		t.Errorf("after rotation the proxy would send %q", got)
	}
	wantCalls(t, "rotation", h.drv.Mutations())

	if err := h.st.Delete(v1alpha1.KindSandbox, "default", "agent"); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("agent")
	if sets.Get(sb.Metadata.UID) != nil {
		t.Error("the substitutions outlive the sandbox")
	}
}
