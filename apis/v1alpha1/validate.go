package v1alpha1

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Validate checks obj and returns every problem found as a *FieldError with
// Path and Msg set (Source and Line empty; Document.Validate fills them).
// It accepts both a manifest as written and one after SetDefaults: fields
// that have defaults may be empty.
func Validate(obj Object) ErrorList {
	v := &validator{}
	switch o := obj.(type) {
	case *Sandbox:
		v.meta(&o.Metadata)
		v.sandbox(&o.Spec)
	case *NetworkPolicy:
		v.meta(&o.Metadata)
		v.networkPolicy(&o.Spec)
	case *Secret:
		v.meta(&o.Metadata)
		v.secret(&o.Spec)
	case *Event:
		v.meta(&o.Metadata)
	default:
		v.add("kind", "cannot validate %T; known kinds: %s", obj, strings.Join(decodableKinds, ", "))
	}
	return v.errs
}

type validator struct{ errs ErrorList }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	dns1123LabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelNameRE    = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	envNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretKeyRE    = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

const dns1123LabelMsg = "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)"

func isDNS1123Label(s string) bool { return len(s) <= 63 && dns1123LabelRE.MatchString(s) }

// isDNS1123Subdomain: dot-separated DNS-1123 labels, at most 253 characters.
func isDNS1123Subdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNS1123Label(l) {
			return false
		}
	}
	return true
}

func (v *validator) meta(m *ObjectMeta) {
	switch {
	case m.Name == "":
		v.add("metadata.name", "required: %s", dns1123LabelMsg)
	case !isDNS1123Label(m.Name):
		v.add("metadata.name", "invalid name %q: %s", m.Name, dns1123LabelMsg)
	}
	if m.Namespace != "" && !isDNS1123Label(m.Namespace) {
		v.add("metadata.namespace", "invalid namespace %q: %s", m.Namespace, dns1123LabelMsg)
	}
	v.labels("metadata.labels", m.Labels)
	for _, k := range sortedKeys(m.Annotations) {
		if msg := labelKeyError(k); msg != "" {
			v.add("metadata.annotations["+k+"]", "invalid annotation key %q: %s", k, msg)
		}
	}
}

// labels checks label keys and values as Kubernetes does.
func (v *validator) labels(p string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if msg := labelKeyError(k); msg != "" {
			v.add(p+"["+k+"]", "invalid label key %q: %s", k, msg)
		}
		if val := labels[k]; val != "" && (len(val) > 63 || !labelNameRE.MatchString(val)) {
			v.add(p+"["+k+"]", "invalid label value %q: must be at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit", val)
		}
	}
}

// labelKeyError returns why k is not a valid label key ([prefix/]name), or "".
func labelKeyError(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && !isDNS1123Subdomain(prefix) {
		return "the prefix before '/' must be a DNS subdomain (lowercase letters, digits, '-' and '.'), e.g. example.com/name"
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		return "the name must be at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/'"
	}
	return ""
}

func (v *validator) sandbox(s *SandboxSpec) {
	if strings.TrimSpace(s.Image) == "" {
		v.add("spec.image", "required: an image reference, e.g. python:3.12-slim, oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE")
	} else if strings.ContainsAny(s.Image, " \t\n\r") {
		v.add("spec.image", "invalid image %q: must not contain whitespace", s.Image)
	}
	v.enum("spec.imagePullPolicy", string(s.ImagePullPolicy), PullIfNotPresent, PullAlways, PullNever)
	v.enum("spec.restartPolicy", string(s.RestartPolicy), RestartAlways, RestartOnFailure, RestartNever)
	v.enum("spec.operatingMode", string(s.OperatingMode), ModeRunning, ModeSuspended)
	v.enum("spec.isolation", string(s.Isolation), IsolationAuto, IsolationMicroVM, IsolationContainer)
	if s.WorkingDir != "" && !path.IsAbs(s.WorkingDir) {
		v.add("spec.workingDir", "invalid path %q: must be absolute (start with /)", s.WorkingDir)
	}

	envSeen := map[string]int{}
	for i, e := range s.Env {
		p := fmt.Sprintf("spec.env[%d]", i)
		switch {
		case e.Name == "":
			v.add(p+".name", "required: letters, digits and '_', not starting with a digit")
		case !envNameRE.MatchString(e.Name):
			v.add(p+".name", "invalid name %q: must be letters, digits and '_', not starting with a digit", e.Name)
		default:
			if j, dup := envSeen[e.Name]; dup {
				v.add(p+".name", "duplicate name %q (also spec.env[%d]); each variable may be set once", e.Name, j)
			} else {
				envSeen[e.Name] = i
			}
		}
		if e.Value != "" && e.ValueFrom != nil {
			v.add(p, "value and valueFrom are both set; set exactly one: a literal value, or valueFrom.secretKeyRef")
		}
		if e.ValueFrom == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref == nil {
			v.add(p+".valueFrom.secretKeyRef", "required: valueFrom must name a Secret key, e.g. {secretKeyRef: {name: openai, key: apiKey}}")
			continue
		}
		rp := p + ".valueFrom.secretKeyRef"
		switch {
		case ref.Name == "":
			v.add(rp+".name", "required: the name of a Secret in the same namespace")
		case !isDNS1123Label(ref.Name):
			v.add(rp+".name", "invalid name %q: %s", ref.Name, dns1123LabelMsg)
		}
		switch {
		case ref.Key == "":
			v.add(rp+".key", "required: a key of the Secret's stringData or data")
		case !secretKeyRE.MatchString(ref.Key):
			v.add(rp+".key", "invalid key %q: must be letters, digits, '-', '_' and '.'", ref.Key)
		}
	}

	r := s.Resources
	if r.CPUs != "" {
		if err := r.CPUs.Validate(); err != nil {
			v.add("spec.resources.cpus", "%v", err)
		} else if r.CPUs.MilliValue() <= 0 {
			v.add("spec.resources.cpus", "invalid quantity %q: must be greater than 0, e.g. 1, 0.5 or 500m", string(r.CPUs))
		}
	}
	if r.Memory != "" {
		if err := r.Memory.Validate(); err != nil {
			v.add("spec.resources.memory", "%v", err)
		} else if r.Memory.Value() < 4<<20 {
			v.add("spec.resources.memory", "invalid quantity %q: must be at least 4Mi, e.g. 512Mi or 1Gi", string(r.Memory))
		}
	}
	if r.PIDs < 0 {
		v.add("spec.resources.pids", "invalid value %d: must be 0 (no limit) or more", r.PIDs)
	}
	if r.Disk != "" {
		if err := r.Disk.Validate(); err != nil {
			v.add("spec.resources.disk", "%v", err)
		} else if n := r.Disk.Value(); n != 0 && n < 64<<20 {
			v.add("spec.resources.disk", "invalid quantity %q: must be 0 (unlimited) or at least 64Mi, e.g. 10Gi", string(r.Disk))
		}
	}

	hostPorts := map[string]int{}
	for i, pt := range s.Ports {
		p := fmt.Sprintf("spec.ports[%d]", i)
		if pt.ContainerPort < 1 || pt.ContainerPort > 65535 {
			v.add(p+".containerPort", "invalid port %d: must be 1-65535", pt.ContainerPort)
		}
		if pt.HostPort < 0 || pt.HostPort > 65535 {
			v.add(p+".hostPort", "invalid port %d: must be 1-65535", pt.HostPort)
		}
		if pt.HostIP != "" {
			if _, err := netip.ParseAddr(pt.HostIP); err != nil {
				v.add(p+".hostIP", "invalid IP address %q: want e.g. 127.0.0.1, 0.0.0.0 or ::1", pt.HostIP)
			}
		}
		v.enum(p+".protocol", pt.Protocol, "TCP", "UDP")
		if pt.HostPort > 0 {
			key := fmt.Sprintf("%d/%s", pt.HostPort, cmp.Or(pt.Protocol, "TCP"))
			if j, dup := hostPorts[key]; dup {
				v.add(p+".hostPort", "duplicate host port %s (also spec.ports[%d]); each host port may be published once", key, j)
			} else {
				hostPorts[key] = i
			}
		}
	}

	mounts := map[string]int{}
	for i, vol := range s.Volumes {
		p := fmt.Sprintf("spec.volumes[%d]", i)
		if vol.Name != "" && !isDNS1123Label(vol.Name) {
			v.add(p+".name", "invalid name %q: %s", vol.Name, dns1123LabelMsg)
		}
		switch {
		case vol.HostPath == "":
			v.add(p+".hostPath", "required: an absolute path on the host, e.g. /srv/data")
		case !path.IsAbs(vol.HostPath):
			v.add(p+".hostPath", "invalid path %q: must be absolute (start with /)", vol.HostPath)
		}
		mp := path.Clean(vol.MountPath)
		switch {
		case vol.MountPath == "":
			v.add(p+".mountPath", "required: an absolute path in the sandbox, e.g. /data")
		case !path.IsAbs(vol.MountPath):
			v.add(p+".mountPath", "invalid path %q: must be absolute (start with /)", vol.MountPath)
		case mp == "/":
			v.add(p+".mountPath", "invalid path %q: cannot mount over the root; choose a directory such as /data", vol.MountPath)
		case reservedMount(mp) != "":
			v.add(p+".mountPath", "invalid path %q: %s is reserved; choose a path outside /.msb, /proc, /sys and /dev", vol.MountPath, reservedMount(mp))
		default:
			if j, dup := mounts[mp]; dup {
				v.add(p+".mountPath", "duplicate mount path %q (also spec.volumes[%d])", vol.MountPath, j)
			} else {
				mounts[mp] = i
			}
		}
	}

	if ttl := s.Lifecycle.TTL; ttl != nil {
		if _, err := ttl.Parse(); err != nil {
			v.add("spec.lifecycle.ttl", "%v", err)
		}
		if s.Lifecycle.ShutdownTime != nil {
			v.add("spec.lifecycle", "ttl and shutdownTime are both set; set one: ttl (e.g. 1h) or shutdownTime (e.g. 2026-12-01T00:00:00Z)")
		}
	}
}

// reservedMount returns the reserved directory p is or is under, or "".
func reservedMount(p string) string {
	for _, r := range []string{"/.msb", "/proc", "/sys", "/dev"} {
		if p == r || strings.HasPrefix(p, r+"/") {
			return r
		}
	}
	return ""
}

// enum checks that val is empty (defaulted) or one of allowed.
func (v *validator) enum(p, val string, allowed ...any) {
	if val == "" {
		return
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = fmt.Sprint(a)
		if names[i] == val {
			return
		}
	}
	v.add(p, "unsupported value %q: must be one of %s", val, strings.Join(names, ", "))
}

func (v *validator) networkPolicy(s *NetworkPolicySpec) {
	v.labels("spec.sandboxSelector.matchLabels", s.SandboxSelector.MatchLabels)
	for i, rule := range s.Egress {
		p := fmt.Sprintf("spec.egress[%d]", i)
		if len(rule.To) == 0 {
			v.add(p+".to", "required: at least one peer: {domain: pypi.example.org}, {cidr: 203.0.113.0/24} or {group: public}")
		}
		for j, peer := range rule.To {
			pp := fmt.Sprintf("%s.to[%d]", p, j)
			set := 0
			for _, f := range []string{peer.Domain, peer.CIDR, peer.Group} {
				if f != "" {
					set++
				}
			}
			if set != 1 {
				v.add(pp, "set exactly one of domain, cidr and group (%d set)", set)
			}
			if peer.Domain != "" && !isDomainPattern(peer.Domain) {
				v.add(pp+".domain", "invalid domain %q: want a lowercase host name such as pypi.example.org, or *.suffix such as *.files.example.org", peer.Domain)
			}
			if peer.CIDR != "" {
				if msg := cidrError(peer.CIDR); msg != "" {
					v.add(pp+".cidr", "invalid CIDR %q: %s", peer.CIDR, msg)
				}
			}
			if peer.Group != "" && !slices.Contains(EgressGroups, peer.Group) {
				v.add(pp+".group", "unsupported group %q: must be one of %s", peer.Group, strings.Join(EgressGroups, ", "))
			}
		}
		for j, port := range rule.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			if port.Port < 1 || port.Port > 65535 {
				v.add(pp+".port", "invalid port %d: must be 1-65535", port.Port)
			}
			v.enum(pp+".protocol", port.Protocol, "TCP", "UDP")
		}
	}
}

// cidrError returns why s is not a canonical CIDR, or "".
func cidrError(s string) string {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil {
			return fmt.Sprintf("want an address with a prefix length, e.g. %s/%d", a, a.BitLen())
		}
		return "want an address with a prefix length, e.g. 203.0.113.0/24 or 2001:db8::/32"
	}
	if m := pfx.Masked(); m != pfx {
		return fmt.Sprintf("has host bits set; did you mean %s?", m)
	}
	return ""
}

// isHostname reports whether s is a lowercase DNS name (labels of letters,
// digits and '-', not starting or ending with '-').
func isHostname(s string) bool {
	return isDNS1123Subdomain(s)
}

// isDomainPattern reports whether s is a host name or "*.suffix".
func isDomainPattern(s string) bool {
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		return isHostname(rest)
	}
	return isHostname(s)
}

var substituteIn = []string{SubstituteHeaders, SubstituteBasicAuth, SubstituteQuery, SubstituteBody}

func (v *validator) secret(s *SecretSpec) {
	if len(s.StringData)+len(s.Data) == 0 {
		v.add("spec", "a Secret needs at least one value in stringData (plain) or data (base64)")
	}
	// Messages never include a value: only keys.
	for _, k := range sortedKeys(s.StringData) {
		p := "spec.stringData[" + k + "]"
		if !secretKeyRE.MatchString(k) {
			v.add(p, "invalid key %q: must be letters, digits, '-', '_' and '.'", k)
		}
		if _, dup := s.Data[k]; dup {
			v.add(p, "key %q is in both stringData and data; keep one", k)
		}
		if s.StringData[k] == Redacted {
			v.add(p, "the value is %q, as printed by get; give the real value", Redacted)
		}
	}
	for _, k := range sortedKeys(s.Data) {
		p := "spec.data[" + k + "]"
		if !secretKeyRE.MatchString(k) {
			v.add(p, "invalid key %q: must be letters, digits, '-', '_' and '.'", k)
		}
		switch val := s.Data[k]; {
		case val == Redacted:
			v.add(p, "the value is %q, as printed by get; give the real value", Redacted)
		default:
			if _, err := base64.StdEncoding.DecodeString(val); err != nil {
				v.add(p, "the value is not valid base64 (value not shown); use stringData for plain text")
			}
		}
	}
	for i, h := range s.AllowedHosts {
		if !isDomainPattern(h) {
			v.add(fmt.Sprintf("spec.allowedHosts[%d]", i), "invalid host %q: want a lowercase host name such as api.example.com, or *.suffix such as *.example.com", h)
		}
	}
	for i, w := range s.SubstituteIn {
		if !slices.Contains(substituteIn, w) {
			v.add(fmt.Sprintf("spec.substituteIn[%d]", i), "unsupported value %q: must be one of %s", w, strings.Join(substituteIn, ", "))
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
