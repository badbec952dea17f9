package v1alpha1

import (
	"reflect"
	"testing"
)

func TestDefaultPullPolicy(t *testing.T) {
	tests := []struct {
		image string
		want  PullPolicy
	}{
		{"python:3.12-slim", PullIfNotPresent},
		{"python", PullAlways},
		{"python:latest", PullAlways},
		{"docker.io/library/python", PullAlways},
		{"localhost:5000/img", PullAlways},
		{"localhost:5000/img:v1", PullIfNotPresent},
		{"localhost:5000/img:latest", PullAlways},
		{"ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", PullIfNotPresent},
		{"oci:/srv/images/py", PullIfNotPresent},
		{"oci:/srv/images/py:latest", PullIfNotPresent},
		{"oci-archive:/tmp/img.tar", PullIfNotPresent},
		{"docker-archive:/tmp/img.tar", PullIfNotPresent},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			if got := DefaultPullPolicy(tt.image); got != tt.want {
				t.Errorf("DefaultPullPolicy(%q) = %s, want %s", tt.image, got, tt.want)
			}
		})
	}
}

func TestSetDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Object
		want Object
	}{
		{
			name: "sandbox",
			in: &Sandbox{
				Metadata: ObjectMeta{Name: "a"},
				Spec: SandboxSpec{
					Image: "alpine",
					Ports: []Port{{ContainerPort: 80, HostPort: 8080}, {ContainerPort: 53, HostIP: "0.0.0.0", Protocol: "UDP"}},
				},
			},
			want: &Sandbox{
				TypeMeta: tm(KindSandbox),
				Metadata: ObjectMeta{Name: "a", Namespace: "default"},
				Spec: SandboxSpec{
					Image:           "alpine",
					ImagePullPolicy: PullAlways,
					Ports:           []Port{{ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1", Protocol: "TCP"}, {ContainerPort: 53, HostIP: "0.0.0.0", Protocol: "UDP"}},
					RestartPolicy:   RestartNever,
					OperatingMode:   ModeRunning,
					Isolation:       IsolationAuto,
				},
			},
		},
		{
			name: "sandbox keeps what is set",
			in: &Sandbox{
				TypeMeta: TypeMeta{APIVersion: "old/v0", Kind: "Sandbox"},
				Metadata: ObjectMeta{Name: "a", Namespace: "team"},
				Spec:     SandboxSpec{Image: "alpine:3", ImagePullPolicy: PullNever, RestartPolicy: RestartAlways, OperatingMode: ModeSuspended, Isolation: IsolationMicroVM},
			},
			want: &Sandbox{
				TypeMeta: tm(KindSandbox),
				Metadata: ObjectMeta{Name: "a", Namespace: "team"},
				Spec:     SandboxSpec{Image: "alpine:3", ImagePullPolicy: PullNever, RestartPolicy: RestartAlways, OperatingMode: ModeSuspended, Isolation: IsolationMicroVM},
			},
		},
		{
			name: "network policy",
			in: &NetworkPolicy{
				Metadata: ObjectMeta{Name: "n"},
				Spec:     NetworkPolicySpec{Egress: []EgressRule{{To: []EgressPeer{{Group: "public"}}, Ports: []PolicyPort{{Port: 443}, {Port: 53, Protocol: "UDP"}}}}},
			},
			want: &NetworkPolicy{
				TypeMeta: tm(KindNetworkPolicy),
				Metadata: ObjectMeta{Name: "n", Namespace: "default"},
				Spec:     NetworkPolicySpec{Egress: []EgressRule{{To: []EgressPeer{{Group: "public"}}, Ports: []PolicyPort{{Port: 443, Protocol: "TCP"}, {Port: 53, Protocol: "UDP"}}}}},
			},
		},
		{
			name: "secret",
			in:   &Secret{Metadata: ObjectMeta{Name: "s"}, Spec: SecretSpec{StringData: map[string]string{"k": "v"}}},
			want: &Secret{TypeMeta: tm(KindSecret), Metadata: ObjectMeta{Name: "s", Namespace: "default"}, Spec: SecretSpec{StringData: map[string]string{"k": "v"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			SetDefaults(tt.in)
			if !reflect.DeepEqual(tt.in, tt.want) {
				t.Errorf("got  %+v\nwant %+v", tt.in, tt.want)
			}
			SetDefaults(tt.in) // idempotent
			if !reflect.DeepEqual(tt.in, tt.want) {
				t.Errorf("second SetDefaults changed the object: %+v", tt.in)
			}
			if errs := Validate(tt.in); len(errs) > 0 {
				t.Errorf("defaulted object does not validate: %v", errs)
			}
		})
	}
	SetDefaults(nil)
	SetDefaults((*Sandbox)(nil)) // no panic
}
