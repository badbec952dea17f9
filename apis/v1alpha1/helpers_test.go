package v1alpha1

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestQuantity(t *testing.T) {
	tests := []struct {
		q          Quantity
		value      int64 // Value()
		milli      int64 // MilliValue()
		wantErr    bool
		wantErrMsg string
	}{
		{q: "512Mi", value: 512 << 20, milli: 512 << 20 * 1000},
		{q: "1Gi", value: 1 << 30, milli: 1 << 30 * 1000},
		{q: "1G", value: 1e9, milli: 1e12},
		{q: "0.5", value: 1, milli: 500},
		{q: ".5", value: 1, milli: 500},
		{q: "500m", value: 1, milli: 500},
		{q: "2", value: 2, milli: 2000},
		{q: "1.5Ki", value: 1536, milli: 1536000},
		{q: "", value: 0, milli: 0},
		{q: "8Pi", value: 1 << 53, milli: 1 << 53 * 1000},
		{q: "1e3", wantErr: true},
		{q: "1E", value: 1e18, wantErr: true}, // exa is too large
		{q: "-1", wantErr: true},
		{q: "+1", wantErr: true},
		{q: "0x10", wantErr: true},
		{q: "Inf", wantErr: true},
		{q: "NaN", wantErr: true},
		{q: "1_000", wantErr: true},
		{q: "512MB", wantErr: true},
		{q: "Mi", wantErr: true},
		{q: "1.2.3", wantErr: true},
		{q: "many", wantErr: true},
		{q: "9Pi", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.q), func(t *testing.T) {
			err := tt.q.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "invalid quantity") {
					t.Errorf("error %q does not say what is wrong", err)
				}
				return
			}
			if got := tt.q.Value(); got != tt.value {
				t.Errorf("Value() = %d, want %d", got, tt.value)
			}
			if got := tt.q.MilliValue(); got != tt.milli {
				t.Errorf("MilliValue() = %d, want %d", got, tt.milli)
			}
		})
	}
}

func testSecret() *Secret {
	return &Secret{
		TypeMeta: tm(KindSecret),
		Metadata: ObjectMeta{Name: "openai", Namespace: "default"},
		Spec: SecretSpec{
			StringData:   map[string]string{"apiKey": "sk-live-1234567890", "org": "org-abcdef"},
			Data:         map[string]string{"token": "c2VjcmV0LXRva2Vu"},
			AllowedHosts: []string{"api.example.com"},
			SubstituteIn: []string{SubstituteHeaders},
		},
	}
}

func TestRedact(t *testing.T) {
	s := testSecret()
	values := []string{"sk-live-1234567890", "org-abcdef", "c2VjcmV0LXRva2Vu", "secret-token"}
	r := Redact(s).(*Secret)
	if r == s {
		t.Fatal("Redact returned the same object")
	}
	if s.Spec.StringData["apiKey"] != "sk-live-1234567890" {
		t.Fatal("Redact changed its argument")
	}
	if len(r.Spec.StringData) != 2 || len(r.Spec.Data) != 1 || r.Spec.Data["token"] != Redacted {
		t.Errorf("keys must stay, values go: %+v", r.Spec)
	}
	for name, render := range map[string]func(Object) ([]byte, error){
		"json.Marshal(Redact)": func(o Object) ([]byte, error) { return json.Marshal(Redact(o)) },
		"ToYAML":               ToYAML,
		"ToJSON":               ToJSON,
	} {
		out, err := render(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if strings.Contains(string(out), v) {
				t.Errorf("%s output contains the value %q:\n%s", name, v, out)
			}
		}
		if !strings.Contains(string(out), "redacted") {
			t.Errorf("%s output does not show %s:\n%s", name, Redacted, out)
		}
	}
	sb := &Sandbox{Metadata: ObjectMeta{Name: "x"}}
	if Redact(sb) != Object(sb) {
		t.Error("Redact of a Sandbox must return it as is")
	}
	if Redact((*Secret)(nil)) != Object((*Secret)(nil)) {
		t.Error("Redact of a nil Secret")
	}
}

func TestClone(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sb := &Sandbox{
		TypeMeta: tm(KindSandbox),
		Metadata: ObjectMeta{Name: "a", Labels: map[string]string{"app": "x"}, CreationTimestamp: &ts},
		Spec:     SandboxSpec{Image: "alpine", Env: []EnvVar{{Name: "A", ValueFrom: &EnvVarSource{SecretKeyRef: &SecretKeySelector{Name: "s", Key: "k"}}}}},
		Status:   SandboxStatus{ExitCode: ptr(int32(3)), Conditions: []Condition{{Type: ConditionReady, Status: ConditionTrue, LastTransitionTime: ts}}},
	}
	c := Clone(sb)
	if !reflect.DeepEqual(c, sb) {
		t.Fatalf("clone differs:\n%+v\n%+v", c, sb)
	}
	c.Metadata.Labels["app"] = "y"
	c.Spec.Env[0].ValueFrom.SecretKeyRef.Key = "other"
	*c.Status.ExitCode = 4
	if sb.Metadata.Labels["app"] != "x" || sb.Spec.Env[0].ValueFrom.SecretKeyRef.Key != "k" || *sb.Status.ExitCode != 3 {
		t.Error("clone shares memory with the original")
	}
	if Clone((*Sandbox)(nil)) != nil {
		t.Error("Clone(nil) != nil")
	}
}

func TestToYAMLAndJSON(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sb := &Sandbox{
		TypeMeta: tm(KindSandbox),
		Metadata: ObjectMeta{Name: "a", Namespace: "default", UID: "u-1", Generation: 2, CreationTimestamp: &ts},
		Spec: SandboxSpec{
			Image:     "alpine",
			Command:   []string{"sh", "-c", "echo <&>"},
			Resources: ResourceRequirements{CPUs: "1", Memory: "512Mi"},
		},
		Status: SandboxStatus{Phase: PhaseRunning, ExitCode: ptr(int32(0))},
	}
	wantYAML := `apiVersion: msb.dev/v1alpha1
kind: Sandbox
metadata:
  name: a
  namespace: default
  uid: u-1
  generation: 2
  creationTimestamp: 2026-01-02T03:04:05Z
spec:
  image: alpine
  command:
    - sh
    - -c
    - echo <&>
  resources:
    cpus: "1"
    memory: 512Mi
status:
  phase: Running
  exitCode: 0
`
	y, err := ToYAML(sb)
	if err != nil || string(y) != wantYAML {
		t.Errorf("ToYAML = %v\n%s\nwant\n%s", err, y, wantYAML)
	}
	wantJSON := `{
    "apiVersion": "msb.dev/v1alpha1",
    "kind": "Sandbox",
    "metadata": {
        "name": "a",
        "namespace": "default",
        "uid": "u-1",
        "generation": 2,
        "creationTimestamp": "2026-01-02T03:04:05Z"
    },
    "spec": {
        "image": "alpine",
        "command": [
            "sh",
            "-c",
            "echo <&>"
        ],
        "resources": {
            "cpus": "1",
            "memory": "512Mi"
        }
    },
    "status": {
        "phase": "Running",
        "exitCode": 0
    }
}
`
	j, err := ToJSON(sb)
	if err != nil || string(j) != wantJSON {
		t.Errorf("ToJSON = %v\n%s\nwant\n%s", err, j, wantJSON)
	}
	if !json.Valid(j) {
		t.Error("ToJSON output is not valid JSON")
	}

	// Output pasted back is accepted: status and server fields are dropped.
	want := Clone(sb)
	want.Status = SandboxStatus{}
	want.Metadata.UID, want.Metadata.Generation, want.Metadata.CreationTimestamp = "", 0, nil
	for name, data := range map[string][]byte{"yaml": y, "json": j} {
		docs, err := Decode(name, data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(docs[0].Object, want) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", name, docs[0].Object, want)
		}
	}
}

func TestMatchLabels(t *testing.T) {
	labels := map[string]string{"app": "agent", "tier": "web", "example.com/team": "a"}
	tests := []struct {
		selector string
		want     bool
		wantErr  bool
	}{
		{"", true, false},
		{"app=agent", true, false},
		{"app==agent", true, false},
		{" app = agent , tier=web ", true, false},
		{"app=other", false, false},
		{"app!=other", true, false},
		{"app!=agent", false, false},
		{"missing!=x", true, false},
		{"app", true, false},
		{"missing", false, false},
		{"!missing", true, false},
		{"!app", false, false},
		{"example.com/team=a,app", true, false},
		{"app=agent,", false, true},
		{"=x", false, true},
		{"app in (a,b)", false, true},
		{"bad key=x", false, true},
		{"app=bad value", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			got, err := MatchLabels(tt.selector, labels)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("MatchLabels(%q) = %v, %v; want %v, error %v", tt.selector, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLabelSelectorMatches(t *testing.T) {
	labels := map[string]string{"app": "agent", "tier": "web"}
	tests := []struct {
		name string
		sel  LabelSelector
		want bool
	}{
		{"empty matches all", LabelSelector{}, true},
		{"one pair", LabelSelector{MatchLabels: map[string]string{"app": "agent"}}, true},
		{"all pairs", LabelSelector{MatchLabels: map[string]string{"app": "agent", "tier": "web"}}, true},
		{"wrong value", LabelSelector{MatchLabels: map[string]string{"app": "x"}}, false},
		{"missing key", LabelSelector{MatchLabels: map[string]string{"zone": "a"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.Matches(labels); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}
