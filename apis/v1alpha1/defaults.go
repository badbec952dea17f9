package v1alpha1

import (
	"reflect"
	"strings"
)

// DefaultHostIP is where published ports listen unless a port says otherwise.
const DefaultHostIP = "127.0.0.1"

// LocalImageTransports are the prefixes of images read from local files
// (paths on msbd's host), never pulled.
var LocalImageTransports = []string{"oci:", "oci-archive:", "docker-archive:"}

// SetDefaults fills in what a manifest may leave out: apiVersion and kind,
// namespace "default", and per kind:
//
//   - Sandbox: imagePullPolicy (Always for a registry image tagged latest or
//     untagged, otherwise IfNotPresent), restartPolicy Never, operatingMode
//     Running, isolation auto, ports hostIP 127.0.0.1 and protocol TCP.
//   - NetworkPolicy: ports protocol TCP.
//
// It is idempotent and never overrides a value that is set.
func SetDefaults(obj Object) {
	if obj == nil || reflect.ValueOf(obj).IsNil() {
		return
	}
	tm := obj.GetTypeMeta()
	tm.APIVersion = APIVersion
	if ki, _ := KindOf(obj); ki.Kind != "" {
		tm.Kind = ki.Kind
	}
	if m := obj.GetMetadata(); m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	switch o := obj.(type) {
	case *Sandbox:
		defaultSandboxSpec(&o.Spec)
	case *NetworkPolicy:
		for i := range o.Spec.Egress {
			for j := range o.Spec.Egress[i].Ports {
				if p := &o.Spec.Egress[i].Ports[j]; p.Protocol == "" {
					p.Protocol = "TCP"
				}
			}
		}
	}
}

func defaultSandboxSpec(s *SandboxSpec) {
	if s.ImagePullPolicy == "" {
		s.ImagePullPolicy = DefaultPullPolicy(s.Image)
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = RestartNever
	}
	if s.OperatingMode == "" {
		s.OperatingMode = ModeRunning
	}
	if s.Isolation == "" {
		s.Isolation = IsolationAuto
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.HostIP == "" {
			p.HostIP = DefaultHostIP
		}
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
	}
}

// DefaultPullPolicy is the pull policy of an image that does not set one, as
// in Kubernetes: Always for a registry image tagged latest or not tagged at
// all, IfNotPresent for any other tag, a digest, or a local transport
// (oci:, oci-archive:, docker-archive:).
func DefaultPullPolicy(image string) PullPolicy {
	for _, t := range LocalImageTransports {
		if strings.HasPrefix(image, t) {
			return PullIfNotPresent
		}
	}
	if strings.Contains(image, "@") {
		return PullIfNotPresent
	}
	// The tag follows the last ':' of the last path element; a ':' before the
	// first '/' is a registry port (localhost:5000/img).
	last := image[strings.LastIndexByte(image, '/')+1:]
	i := strings.LastIndexByte(last, ':')
	if i < 0 || last[i+1:] == "latest" {
		return PullAlways
	}
	return PullIfNotPresent
}
