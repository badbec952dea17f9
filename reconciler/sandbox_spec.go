package reconciler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
)

// backoffResetAfter is how long a run must last for its restart to start
// again from the shortest backoff.
const backoffResetAfter = 10 * time.Minute

// secretKeys is secretinject's view of the Secrets in the store.
func (r *SandboxReconciler) secretKeys(namespace, name string) (map[string]bool, bool, error) {
	sec, err := r.getSecret(namespace, name)
	if sec == nil || err != nil {
		return nil, false, err
	}
	keys := map[string]bool{}
	for k := range sec.Spec.StringData {
		keys[k] = true
	}
	for k := range sec.Spec.Data {
		keys[k] = true
	}
	return keys, true, nil
}

// getSecret reads a Secret; nil (and no error) when there is none.
func (r *SandboxReconciler) getSecret(namespace, name string) (*v1alpha1.Secret, error) {
	sec := &v1alpha1.Secret{}
	if err := r.Store.Get(v1alpha1.KindSecret, namespace, name, sec); err != nil {
		if errors.Is(err, v1alpha1.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	return sec, nil
}

// driverSpec merges the image config with the Sandbox spec the way
// Kubernetes does: command replaces the entrypoint, args replace cmd.
func (r *SandboxReconciler) driverSpec(sb *v1alpha1.Sandbox, img *images.Image) (vmdriver.Spec, error) {
	s := sb.Spec
	var argv []string
	switch {
	case len(s.Command) > 0:
		argv = append(append(argv, s.Command...), s.Args...)
	case len(s.Args) > 0:
		argv = append(append(argv, img.Config.Entrypoint...), s.Args...)
	default:
		argv = append(append(argv, img.Config.Entrypoint...), img.Config.Cmd...)
	}
	if len(argv) == 0 {
		return vmdriver.Spec{}, Terminal(fmt.Errorf("image %s has no entrypoint or cmd and the Sandbox sets no command: set spec.command (and spec.args)", s.Image))
	}
	env := mergeEnv(img.Config.Env, "HOSTNAME="+sb.Metadata.Name)
	for _, e := range s.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			// The sandbox only ever sees a placeholder; the egress proxy
			// substitutes the value on the way out.
			ref := e.ValueFrom.SecretKeyRef
			p, err := secretinject.Resolve(sb.Metadata.UID, secretinject.Ref{Env: e.Name, Namespace: sb.Metadata.Namespace, Secret: ref.Name, Key: ref.Key}, r.secretKeys)
			if err != nil {
				return vmdriver.Spec{}, err
			}
			v = p
		}
		env = mergeEnv(env, e.Name+"="+v)
	}
	uid, gid, err := images.ResolveUser(img.Config.User, img.Layers)
	if err != nil {
		return vmdriver.Spec{}, Terminal(err)
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = img.Config.WorkingDir
	}
	if wd == "" {
		wd = "/"
	}
	spec := vmdriver.Spec{
		ID:         sb.Metadata.UID,
		Hostname:   sb.Metadata.Name,
		Layers:     img.Layers,
		AgentPath:  r.AgentPath,
		Args:       argv,
		Env:        env,
		WorkingDir: wd,
		UID:        uid,
		GID:        gid,
	}
	spec.MemoryBytes, spec.MilliCPUs, spec.PIDs = r.limits(sb)
	spec.DiskBytes = r.diskBytes(sb)
	for _, v := range s.Volumes {
		spec.Mounts = append(spec.Mounts, vmdriver.Mount{HostPath: v.HostPath, Path: v.MountPath, ReadOnly: v.ReadOnly})
	}
	spec.Ports = specPorts(sb)
	r.trustSecrets(sb, &spec, img.Layers)
	return spec, nil
}

func mergeEnv(env []string, kv string) []string {
	name, _, _ := strings.Cut(kv, "=")
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if n, _, _ := strings.Cut(e, "="); n != name {
			out = append(out, e)
		}
	}
	return append(out, kv)
}

// specHash identifies what a sandbox runs as the user asked for it: the image
// reference as written, command, args, env, working dir, resources, volumes
// and ports, plus the defaults msbd filled in. Like a Kubernetes pod, a
// running sandbox keeps the image it started with: a tag moving in the cache
// (another pull, even one whose image config differs) restarts nothing;
// the sandbox picks the new image up when it next starts. Fields that do not
// change the running sandbox (pull and restart policy, lifecycle, mode) are
// left out.
func (r *SandboxReconciler) specHash(sb *v1alpha1.Sandbox) string {
	s := sb.Spec
	mem, milli, pids := r.limits(sb)
	b, _ := json.Marshal(struct {
		Image       string
		Command     []string
		Args        []string
		WorkingDir  string
		Env         []v1alpha1.EnvVar
		Volumes     []v1alpha1.Volume
		Ports       []v1alpha1.Port
		MemoryBytes int64
		MilliCPUs   int64
		PIDs        int64
	}{s.Image, s.Command, s.Args, s.WorkingDir, s.Env, s.Volumes, s.Ports, mem, milli, pids})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// limits are the sandbox's resource limits: its spec's, else msbd's defaults.
func (r *SandboxReconciler) limits(sb *v1alpha1.Sandbox) (memoryBytes, milliCPUs, pids int64) {
	res := sb.Spec.Resources
	memoryBytes, milliCPUs, pids = res.Memory.Value(), res.CPUs.MilliValue(), res.PIDs
	if memoryBytes == 0 {
		memoryBytes = r.DefaultMemoryBytes
	}
	if pids == 0 {
		pids = r.DefaultPIDs
	}
	return memoryBytes, milliCPUs, pids
}

func expiresAt(sb *v1alpha1.Sandbox) *time.Time {
	l := sb.Spec.Lifecycle
	var exp *time.Time
	if l.ShutdownTime != nil {
		t := l.ShutdownTime.UTC()
		exp = &t
	}
	if l.TTL != nil && sb.Metadata.CreationTimestamp != nil {
		if d, err := l.TTL.Parse(); err == nil {
			t := sb.Metadata.CreationTimestamp.Add(d).UTC()
			if exp == nil || t.Before(*exp) {
				exp = &t
			}
		}
	}
	return exp
}

// warnExposedVolumes tells, in a Warning event, what the driver finds
// risky about the sandbox's volumes (see vmdriver.VolumeAdvisor).
func (r *SandboxReconciler) warnExposedVolumes(d vmdriver.Driver, sb *v1alpha1.Sandbox, spec vmdriver.Spec) {
	va, ok := d.(vmdriver.VolumeAdvisor)
	if !ok {
		return
	}
	for _, msg := range va.VolumeWarnings(spec) {
		r.event(sb, v1alpha1.EventWarning, ReasonVolumeExposed, msg)
	}
}

// portsNotPublished says, where msbd runs without sandbox networking (no
// Network), that spec.ports are not published: a condition while ports are
// set, and a Warning event when they are first seen, rather than silence.
func (r *SandboxReconciler) portsNotPublished(sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) {
	if r.Network != nil {
		return
	}
	if len(sb.Spec.Ports) == 0 {
		v1alpha1.RemoveCondition(&st.Conditions, ConditionPortsPublished)
		return
	}
	const msg = "spec.ports are not published yet: this msbd has no sandbox networking, so nothing on the host forwards to the sandbox"
	if cond(st, ConditionPortsPublished) != ReasonPortsNotPublished {
		r.event(sb, v1alpha1.EventWarning, ReasonPortsNotPublished, msg)
	}
	r.condition(st, ConditionPortsPublished, v1alpha1.ConditionFalse, ReasonPortsNotPublished, msg)
}
