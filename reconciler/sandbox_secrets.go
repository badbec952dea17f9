package reconciler

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
)

// ReasonSecretLeakBlocked is the Warning event of a request or DNS query that
// would have carried a placeholder where its Secret may not go.
const ReasonSecretLeakBlocked = "SecretLeakBlocked"

// SecretInjection is what the Sandbox controller needs to let a sandbox use
// its Secrets: msbd's CA (trusted inside sandboxes that reference a Secret)
// and the substitution sets the egress proxy and the DNS filter read.
type SecretInjection struct {
	CA   *secretinject.CA
	Sets *secretinject.Sets
}

// maxTrustBundle bounds what msbd reads of an image's CA bundle.
const maxTrustBundle = 4 << 20

// secretBindings returns the substitutions of sb's secret references with
// their current values (a rotated Secret gives new values behind the same
// placeholders).
func (r *SandboxReconciler) secretBindings(sb *v1alpha1.Sandbox) ([]secretinject.Binding, error) {
	var out []secretinject.Binding
	for _, e := range sb.Spec.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		sec, err := r.getSecret(sb.Metadata.Namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		value, found, err := secretValue(sec, ref.Key)
		if err != nil {
			return nil, fmt.Errorf("secret %q key %q: %w", ref.Name, ref.Key, err)
		}
		if !found {
			return nil, &secretinject.RefError{Ref: secretinject.Ref{Env: e.Name, Namespace: sb.Metadata.Namespace, Secret: ref.Name, Key: ref.Key}, MissingKey: sec != nil}
		}
		where, err := secretinject.ParseWhere(sec.Spec.SubstituteIn)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		out = append(out, secretinject.Binding{
			Placeholder:  secretinject.Placeholder(sb.Metadata.UID, sb.Metadata.Namespace, ref.Name, ref.Key),
			Value:        value,
			Secret:       sb.Metadata.Namespace + "/" + ref.Name,
			Key:          ref.Key,
			AllowedHosts: sec.Spec.AllowedHosts,
			In:           where,
		})
	}
	return out, nil
}

// secretValue is key's value in sec (nil: no such Secret): stringData as is,
// data decoded from base64.
func secretValue(sec *v1alpha1.Secret, key string) (value []byte, found bool, err error) {
	if sec == nil {
		return nil, false, nil
	}
	if v, ok := sec.Spec.StringData[key]; ok {
		return []byte(v), true, nil
	}
	enc, ok := sec.Spec.Data[key]
	if !ok {
		return nil, false, nil
	}
	v, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, false, errors.New("data is not base64: re-apply the Secret with the value base64-encoded, or put it in stringData")
	}
	return v, true, nil
}

// injectSecrets hands the proxy sb's current substitutions. Called at every
// start and every reconcile of a running sandbox: a re-applied Secret
// changes what the sandbox sends within a reconcile, without a restart.
func (r *SandboxReconciler) injectSecrets(sb *v1alpha1.Sandbox) error {
	if r.Secrets == nil {
		return nil
	}
	bs, err := r.secretBindings(sb)
	if err != nil {
		return err
	}
	set, err := secretinject.NewSet(bs)
	if err != nil {
		return err
	}
	r.Secrets.Sets.Put(sb.Metadata.UID, set)
	return nil
}

// trustSecrets makes a sandbox that references a Secret trust msbd's CA,
// beside its image's own roots: the bundle at the image's usual path,
// read-only, and the variables Go, Python, curl, Node and git read.
func (r *SandboxReconciler) trustSecrets(sb *v1alpha1.Sandbox, spec *vmdriver.Spec, layers []string) {
	if r.Secrets == nil || !referencesSecret(sb) {
		return
	}
	path, system := secretinject.DefaultBundlePath, []byte(nil)
	for _, p := range secretinject.SystemBundlePaths {
		b, found, err := images.ReadImageFile(layers, strings.TrimPrefix(p, "/"), maxTrustBundle)
		if err == nil && found && len(strings.TrimSpace(string(b))) > 0 {
			path, system = p, b
			break
		}
	}
	spec.Files = append(spec.Files, vmdriver.File{Path: path, Data: r.Secrets.CA.TrustBundle(system), Mode: 0o644})
	set := map[string]bool{}
	for _, e := range sb.Spec.Env {
		set[e.Name] = true
	}
	for _, kv := range secretinject.TrustEnv(path) {
		if name, _, _ := strings.Cut(kv, "="); !set[name] {
			spec.Env = mergeEnv(spec.Env, kv)
		}
	}
}

func referencesSecret(sb *v1alpha1.Sandbox) bool {
	for _, e := range sb.Spec.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}
