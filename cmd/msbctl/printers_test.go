package main

import (
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

func ago(d time.Duration) *time.Time {
	t := testNow.Add(-d)
	return &t
}

func fixtureSandboxes() []v1alpha1.Object {
	exit := int32(3)
	ttl := v1alpha1.Duration("1h")
	web := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{
			Name: "web", Namespace: "default", UID: "1234",
			Labels:            map[string]string{"app": "agent", "tier": "front"},
			Annotations:       map[string]string{"owner": "team-a"},
			CreationTimestamp: ago(3*time.Hour + 5*time.Minute),
			Finalizers:        []string{v1alpha1.FinalizerSandbox},
		},
		Spec: v1alpha1.SandboxSpec{
			Image:           "python:3.12-slim",
			ImagePullPolicy: v1alpha1.PullIfNotPresent,
			Command:         []string{"python3", "-m", "http.server"},
			WorkingDir:      "/work",
			Env: []v1alpha1.EnvVar{
				{Name: "MODE", Value: "fast"},
				{Name: "OPENAI_API_KEY", ValueFrom: &v1alpha1.EnvVarSource{SecretKeyRef: &v1alpha1.SecretKeySelector{Name: "openai", Key: "apiKey"}}},
			},
			Resources:     v1alpha1.ResourceRequirements{CPUs: "1", Memory: "512Mi", PIDs: 256},
			Ports:         []v1alpha1.Port{{ContainerPort: 8000, HostPort: 18000}},
			Volumes:       []v1alpha1.Volume{{HostPath: "/srv/data", MountPath: "/data", ReadOnly: true}},
			RestartPolicy: v1alpha1.RestartAlways,
			OperatingMode: v1alpha1.ModeRunning,
			Lifecycle:     v1alpha1.Lifecycle{TTL: &ttl},
			Isolation:     v1alpha1.IsolationAuto,
		},
		Status: v1alpha1.SandboxStatus{
			ObservedGeneration: 2,
			Phase:              v1alpha1.PhaseRunning,
			Driver:             "container",
			Isolation:          v1alpha1.IsolationContainer,
			IP:                 "10.88.0.2",
			StartedAt:          ago(3 * time.Hour),
			RestartCount:       1,
			ImageDigest:        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Conditions: []v1alpha1.Condition{
				{Type: "ImageReady", Status: "True", Reason: "Pulled", LastTransitionTime: *ago(3*time.Hour + 4*time.Minute)},
				{Type: "Ready", Status: "True", Reason: "Running", Message: "sandbox is running", LastTransitionTime: *ago(3 * time.Hour)},
			},
		},
	}
	job := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: "batch-job-with-a-long-name", Namespace: "team-b", CreationTimestamp: ago(45 * time.Second)},
		Spec:     v1alpha1.SandboxSpec{Image: "busybox", Isolation: v1alpha1.IsolationMicroVM},
		Status: v1alpha1.SandboxStatus{
			Phase:    v1alpha1.PhaseFailed,
			ExitCode: &exit,
			Conditions: []v1alpha1.Condition{
				{Type: "Ready", Status: "False", Reason: "Exited", Message: "command exited with code 3"},
			},
		},
	}
	pending := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: "new", Namespace: "default", CreationTimestamp: ago(5 * 24 * time.Hour)},
		Spec:     v1alpha1.SandboxSpec{Image: "alpine"},
	}
	return []v1alpha1.Object{web, job, pending}
}

func fixtureEvents() []v1alpha1.Event {
	ref := v1alpha1.ObjectReference{Kind: v1alpha1.KindSandbox, Namespace: "default", Name: "web"}
	mk := func(typ, reason, msg string, count int32, first, last time.Duration) v1alpha1.Event {
		return v1alpha1.Event{
			TypeMeta:       v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindEvent},
			Metadata:       v1alpha1.ObjectMeta{Name: "web." + strings.ToLower(reason), Namespace: "default"},
			InvolvedObject: ref, Type: typ, Reason: reason, Message: msg, Count: count,
			FirstSeen: *ago(first), LastSeen: *ago(last),
		}
	}
	return []v1alpha1.Event{
		mk(v1alpha1.EventNormal, "Pulled", "pulled image python:3.12-slim", 1, 3*time.Hour+4*time.Minute, 3*time.Hour+4*time.Minute),
		mk(v1alpha1.EventWarning, "BackOff", "command exited with code 1;\nrestarting", 3, 3*time.Hour+3*time.Minute, 3*time.Hour+1*time.Minute),
		mk(v1alpha1.EventNormal, "Started", "started with driver container", 2, 3*time.Hour+2*time.Minute, 3*time.Hour),
	}
}

func fixturePolicyAndSecret() (*v1alpha1.NetworkPolicy, *v1alpha1.Secret) {
	np := &v1alpha1.NetworkPolicy{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindNetworkPolicy},
		Metadata: v1alpha1.ObjectMeta{Name: "pypi", Namespace: "default", CreationTimestamp: ago(10 * time.Minute)},
		Spec: v1alpha1.NetworkPolicySpec{
			SandboxSelector: v1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Egress: []v1alpha1.EgressRule{
				{To: []v1alpha1.EgressPeer{{Domain: "pypi.example.org"}, {Domain: "*.files.example.org"}}, Ports: []v1alpha1.PolicyPort{{Port: 443}}},
				{To: []v1alpha1.EgressPeer{{CIDR: "203.0.113.0/24"}, {Group: "public"}}},
			},
		},
	}
	sec := &v1alpha1.Secret{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSecret},
		Metadata: v1alpha1.ObjectMeta{Name: "openai", Namespace: "default", CreationTimestamp: ago(2 * 24 * time.Hour)},
		Spec: v1alpha1.SecretSpec{
			StringData:   map[string]string{"apiKey": "sk-live-SECRET", "org": "org-SECRET"},
			AllowedHosts: []string{"api.example.com", "*.azure.example.com"},
			SubstituteIn: []string{v1alpha1.SubstituteHeaders},
		},
	}
	return np, sec
}

func TestTables(t *testing.T) {
	sbs := fixtureSandboxes()
	np, sec := fixturePolicyAndSecret()
	evs := fixtureEvents()
	evObjs := make([]v1alpha1.Object, len(evs))
	for i := range evs {
		evObjs[i] = &evs[i]
	}
	tests := []struct {
		name       string
		objs       []v1alpha1.Object
		format     string
		namespaces bool
	}{
		{"sandboxes", sbs, outTable, false},
		{"sandboxes-wide", sbs, outWide, false},
		{"sandboxes-all-namespaces", sbs, outTable, true},
		{"networkpolicies", []v1alpha1.Object{np}, outTable, false},
		{"secrets", []v1alpha1.Object{sec}, outTable, false},
		{"events", evObjs, outTable, false},
		{"events-all-namespaces", evObjs, outTable, true},
		{"mixed-names", []v1alpha1.Object{sbs[0], np, sec}, outName, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printObjects(&b, tt.format, tt.objs, false, tt.namespaces); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(b.String(), "SECRET") {
				t.Fatalf("a secret value was printed:\n%s", b.String())
			}
			golden(t, "table-"+tt.name, b.String())
		})
	}
}

func TestDescribe(t *testing.T) {
	sbs := fixtureSandboxes()
	np, sec := fixturePolicyAndSecret()
	tests := []struct {
		name   string
		obj    v1alpha1.Object
		events []v1alpha1.Event
	}{
		{"sandbox", sbs[0], fixtureEvents()},
		{"sandbox-failed", sbs[1], nil},
		{"networkpolicy", np, nil},
		{"secret", sec, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			describeObject(&b, tt.obj, tt.events)
			if strings.Contains(b.String(), "SECRET") {
				t.Fatalf("a secret value was printed:\n%s", b.String())
			}
			golden(t, "describe-"+tt.name, b.String())
		})
	}
}

func TestYAMLAndJSONRedact(t *testing.T) {
	np, sec := fixturePolicyAndSecret()
	for _, format := range []string{outYAML, outJSON} {
		for _, single := range []bool{true, false} {
			var b strings.Builder
			objs := []v1alpha1.Object{sec}
			if !single {
				objs = append(objs, np)
			}
			if err := printObjects(&b, format, objs, single, false); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			if strings.Contains(out, "SECRET") || !strings.Contains(out, v1alpha1.Redacted) {
				t.Errorf("%s single=%v: values not redacted:\n%s", format, single, out)
			}
			if isList := strings.Contains(out, "List"); isList == single {
				t.Errorf("%s single=%v: List=%v:\n%s", format, single, isList, out)
			}
		}
	}
	// The caller's object is left as it was.
	if sec.Spec.StringData["apiKey"] != "sk-live-SECRET" {
		t.Error("printing modified the object")
	}
	var b strings.Builder
	if err := printObjects(&b, outYAML, []v1alpha1.Object{sec, np}, false, false); err != nil {
		t.Fatal(err)
	}
	golden(t, "list-yaml", b.String())
}
