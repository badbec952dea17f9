package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func tm(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }

func TestDecodeGood(t *testing.T) {
	tests := []struct {
		file      string
		want      []Object
		wantLines []int
	}{
		{
			file: "good/all.yaml",
			want: []Object{
				&Sandbox{
					TypeMeta: tm(KindSandbox),
					Metadata: ObjectMeta{Name: "agent-1", Namespace: "default", Labels: map[string]string{"app": "agent"}},
					Spec: SandboxSpec{
						Image:           "python:3.12-slim",
						ImagePullPolicy: PullIfNotPresent,
						Command:         []string{"python3", "-m", "http.server"},
						Args:            []string{},
						WorkingDir:      "/work",
						Env: []EnvVar{
							{Name: "MODE", Value: "fast"},
							{Name: "OPENAI_API_KEY", ValueFrom: &EnvVarSource{SecretKeyRef: &SecretKeySelector{Name: "openai", Key: "apiKey"}}},
						},
						Resources:     ResourceRequirements{CPUs: "0.5", Memory: "512Mi", PIDs: 256},
						Ports:         []Port{{ContainerPort: 8000, HostPort: 18000}},
						Volumes:       []Volume{{HostPath: "/srv/data", MountPath: "/data", ReadOnly: true}},
						RestartPolicy: RestartNever,
						OperatingMode: ModeRunning,
						Lifecycle:     Lifecycle{TTL: ptr(Duration("1h"))},
						Isolation:     IsolationAuto,
					},
				},
				&NetworkPolicy{
					TypeMeta: tm(KindNetworkPolicy),
					Metadata: ObjectMeta{Name: "pypi"},
					Spec: NetworkPolicySpec{
						SandboxSelector: LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
						Egress: []EgressRule{
							{To: []EgressPeer{{Domain: "pypi.example.org"}, {Domain: "*.files.example.org"}}, Ports: []PolicyPort{{Port: 443}}},
							{To: []EgressPeer{{CIDR: "203.0.113.0/24"}, {Group: "public"}}},
						},
					},
				},
				&Secret{
					TypeMeta: tm(KindSecret),
					Metadata: ObjectMeta{Name: "openai"},
					Spec: SecretSpec{
						StringData:   map[string]string{"apiKey": "sk-test"},
						Data:         map[string]string{"token": "c2VjcmV0"},
						AllowedHosts: []string{"api.example.com"},
						SubstituteIn: []string{SubstituteHeaders, SubstituteBasicAuth},
					},
				},
			},
			wantLines: []int{2, 23, 36},
		},
		{
			file: "good/sandbox.json",
			want: []Object{&Sandbox{
				TypeMeta: tm(KindSandbox),
				Metadata: ObjectMeta{Name: "json-1", Labels: map[string]string{"app": "agent"}},
				Spec: SandboxSpec{
					Image:     "oci:/srv/images/py:3.12",
					Command:   []string{"sh", "-c", "echo \U0001F600 é"},
					Resources: ResourceRequirements{CPUs: "1", Memory: "1Gi"},
					Lifecycle: Lifecycle{ShutdownTime: ptr(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))},
				},
			}},
			wantLines: []int{1},
		},
		{
			file: "good/list.json",
			want: []Object{
				&Secret{TypeMeta: tm(KindSecret), Metadata: ObjectMeta{Name: "s1"}, Spec: SecretSpec{StringData: map[string]string{"k": "v"}}},
				&NetworkPolicy{
					TypeMeta: tm(KindNetworkPolicy),
					Metadata: ObjectMeta{Name: "np1", Namespace: "team-a"},
					Spec: NetworkPolicySpec{Egress: []EgressRule{{
						To:    []EgressPeer{{Group: "public"}},
						Ports: []PolicyPort{{Port: 53, Protocol: "UDP"}},
					}}},
				},
			},
			wantLines: []int{6, 12},
		},
		{
			// get -o yaml output: status and server-set metadata are dropped.
			file: "good/list.yaml",
			want: []Object{&Sandbox{
				TypeMeta: tm(KindSandbox),
				Metadata: ObjectMeta{Name: "from-get", Namespace: "default"},
				Spec:     SandboxSpec{Image: "alpine"},
			}},
			wantLines: []int{4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			docs, err := Decode(filepath.Base(tt.file), readFixture(t, tt.file))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(docs) != len(tt.want) {
				t.Fatalf("got %d documents, want %d", len(docs), len(tt.want))
			}
			for i, d := range docs {
				if !reflect.DeepEqual(d.Object, tt.want[i]) {
					t.Errorf("document %d:\n got %#v\nwant %#v", i, d.Object, tt.want[i])
				}
				if d.Source != filepath.Base(tt.file) || d.Line != tt.wantLines[i] {
					t.Errorf("document %d at %s:%d, want %s:%d", i, d.Source, d.Line, filepath.Base(tt.file), tt.wantLines[i])
				}
				if err := d.Validate(); err != nil {
					t.Errorf("document %d: Validate: %v", i, err)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		file string
		want string // the whole error text
	}{
		{"unknown_field.yaml", `
unknown_field.yaml:13: spec.env[1].valueFrom.secretKeyRef.nam: unknown field
unknown_field.yaml:16: spec.resources.memroy: unknown field`},
		{"wrong_type.yaml", `
wrong_type.yaml:6: spec.command: expected a list of strings, got a mapping
wrong_type.yaml:9: spec.resources.pids: cannot use "many" as integer
wrong_type.yaml:11: spec.ports[0].containerPort: cannot use "8000" as integer
wrong_type.yaml:12: spec.ports[1].containerPort: cannot use "99999999999" as integer: out of range
wrong_type.yaml:14: spec.volumes[0].readOnly: cannot use "yes" as boolean: want true or false
wrong_type.yaml:15: spec.workingDir: cannot use 1.10 (a number) as string; quote it: "1.10"`},
		{"bad_name.yaml", `
bad_name.yaml:4: metadata.name: invalid name "Foo_Bar": must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)`},
		{"bad_quantity.yaml", `
bad_quantity.yaml:7: spec.resources.cpus: invalid quantity "1e3": want a number with an optional suffix (Ki, Mi, Gi, k, M, G, m), e.g. 512Mi or 0.5
bad_quantity.yaml:8: spec.resources.memory: invalid quantity "512MB": want a number with an optional suffix (Ki, Mi, Gi, k, M, G, m), e.g. 512Mi or 0.5`},
		{"duplicate_key.yaml", `
duplicate_key.yaml:7: spec.image: duplicate key (first at line 5)`},
		{"unknown_kind.yaml", `
unknown_kind.yaml:2: kind: kind "Sandbx" is not known; known kinds: Sandbox, NetworkPolicy, Secret`},
		{"bad_apiversion.yaml", `
bad_apiversion.yaml:1: apiVersion: "v1" is not known; want msb.dev/v1alpha1
bad_apiversion.yaml:6: apiVersion: required; want msb.dev/v1alpha1
bad_apiversion.yaml:10: kind: required; known kinds: Sandbox, NetworkPolicy, Secret`},
		{"bad_enum.yaml", `
bad_enum.yaml:6: spec.restartPolicy: unsupported value "Sometimes": must be one of Always, OnFailure, Never
bad_enum.yaml:7: spec.isolation: unsupported value "vm": must be one of auto, microvm, container`},
		{"env_both.yaml", `
env_both.yaml:9: spec.env[1]: value and valueFrom are both set; set exactly one: a literal value, or valueFrom.secretKeyRef
env_both.yaml:13: spec.env[2].name: invalid name "1BAD": must be letters, digits and '_', not starting with a digit
env_both.yaml:14: spec.env[3].name: duplicate name "OK" (also spec.env[0]); each variable may be set once`},
		{"bad_cidr.yaml", `
bad_cidr.yaml:7: spec.egress[0].to[0].cidr: invalid CIDR "10.0.0.300/8": want an address with a prefix length, e.g. 203.0.113.0/24 or 2001:db8::/32
bad_cidr.yaml:8: spec.egress[0].to[1].cidr: invalid CIDR "10.1.2.3/8": has host bits set; did you mean 10.0.0.0/8?
bad_cidr.yaml:9: spec.egress[0].to[2].domain: invalid domain "Example.COM": want a lowercase host name such as pypi.example.org, or *.suffix such as *.files.example.org
bad_cidr.yaml:10: spec.egress[0].to[3].group: unsupported group "internet": must be one of public, private, loopback, link-local, metadata, host
bad_cidr.yaml:11: spec.egress[0].to[4]: set exactly one of domain, cidr and group (2 set)
bad_cidr.yaml:12: spec.egress[0].ports[0].port: invalid port 0: must be 1-65535
bad_cidr.yaml:12: spec.egress[0].ports[0].protocol: unsupported value "ICMP": must be one of TCP, UDP`},
		{"syntax.yaml", `
syntax.yaml:7: invalid YAML: did not find expected ',' or '}'`},
		{"secret_value.yaml", `
secret_value.yaml:6: spec.stringData[pin]: expected a string, got a number (value not shown); quote the value
secret_value.yaml:7: spec.stringData[ok]: key "ok" is in both stringData and data; keep one
secret_value.yaml:9: spec.data[token]: the value is not valid base64 (value not shown); use stringData for plain text
secret_value.yaml:11: spec.allowedHosts[1]: invalid host "*.Example.com": want a lowercase host name such as api.example.com, or *.suffix such as *.example.com
secret_value.yaml:12: spec.substituteIn[0]: unsupported value "cookies": must be one of headers, basicAuth, query, body`},
		{"json_error.json", `
json_error.json:7: spec.resources.memroy: unknown field
json_error.json:8: spec.ports[1].hostPort: cannot use "8080.5" as integer`},
		{"volumes.yaml", `
volumes.yaml:3: metadata.labels[bad key!]: invalid label key "bad key!": the name must be at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/'
volumes.yaml:7: spec.volumes[0].hostPath: invalid path "relative/dir": must be absolute (start with /)
volumes.yaml:8: spec.volumes[1].mountPath: invalid path "/proc/x": /proc is reserved; choose a path outside /.msb, /proc, /sys and /dev
volumes.yaml:9: spec.volumes[2].mountPath: invalid path "/": cannot mount over the root; choose a directory such as /data
volumes.yaml:11: spec.ports[0].hostIP: invalid IP address "localhost": want e.g. 127.0.0.1, 0.0.0.0 or ::1
volumes.yaml:12: spec.ports[1].hostPort: duplicate host port 8080/TCP (also spec.ports[0]); each host port may be published once
volumes.yaml:13: spec.lifecycle.ttl: invalid duration "forever": want e.g. 90s, 10m or 1h
volumes.yaml:13: spec.lifecycle: ttl and shutdownTime are both set; set one: ttl (e.g. 1h) or shutdownTime (e.g. 2026-12-01T00:00:00Z)
volumes.yaml:14: spec.resources.memory: invalid quantity "1Mi": must be at least 4Mi, e.g. 512Mi or 1Gi
volumes.yaml:14: spec.resources.pids: invalid value -1: must be 0 (no limit) or more`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Decode(tt.file, readFixture(t, "errors/"+tt.file))
			if err == nil {
				t.Fatal("Decode succeeded, want errors")
			}
			if got, want := err.Error(), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
			var el ErrorList
			if !errors.As(err, &el) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			for _, e := range el {
				var fe *FieldError
				if !errors.As(e, &fe) || fe.Source != tt.file || fe.Line == 0 {
					t.Errorf("%v: want a *FieldError with source and line", e)
				}
			}
		})
	}
}

func TestDecodeSecretValuesNeverInErrors(t *testing.T) {
	_, err := Decode("s.yaml", readFixture(t, "errors/secret_value.yaml"))
	for _, v := range []string{"12345678", "hunter2"} {
		if strings.Contains(err.Error(), v) {
			t.Errorf("error text contains the secret value %q:\n%v", v, err)
		}
	}
}

func TestDecodeAllDocumentsReported(t *testing.T) {
	docs, err := Decode("three_bad.yaml", readFixture(t, "errors/three_bad.yaml"))
	var el ErrorList
	if !errors.As(err, &el) || len(el) < 3 {
		t.Fatalf("want 3+ errors, got %v", err)
	}
	want := `three_bad.yaml:4: spec.imagePullPolicy: unsupported value "Sometimes": must be one of IfNotPresent, Always, Never
three_bad.yaml:9: spec.colour: unknown field
three_bad.yaml:14: spec.image: required: an image reference, e.g. python:3.12-slim, oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE`
	if err.Error() != want {
		t.Errorf("errors:\n%v\nwant:\n%s", err, want)
	}
	// The valid fourth document is still returned.
	if len(docs) != 1 || docs[0].Object.GetMetadata().Name != "fine" || docs[0].Line != 16 {
		t.Errorf("documents: %+v", docs)
	}
}

func TestDecodeInline(t *testing.T) {
	const head = "apiVersion: msb.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: x}\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty input", "", ""},
		{"only separators and comments", "---\n# nothing\n---\n", ""},
		{"not a mapping", "- a\n- b\n", "in:1: expected an object (a mapping with apiVersion, kind, metadata and spec), got a list"},
		{"scalar document", "hello\n", "in:1: expected an object (a mapping with apiVersion, kind, metadata and spec), got a string"},
		{"spec not a mapping", head + "spec: alpine\n", "in:4: spec: expected a mapping, got a string"},
		{"env not a list", head + "spec: {image: a, env: {A: b}}\n", "in:4: spec.env: expected a list of mappings, got a mapping"},
		{"case hint", head + "spec: {image: a, ImagePullPolicy: Always}\n", `in:4: spec.ImagePullPolicy: unknown field (did you mean "imagePullPolicy"?)`},
		{"bad time", head + "spec: {image: a, lifecycle: {shutdownTime: tomorrow}}\n", `in:4: spec.lifecycle.shutdownTime: cannot use "tomorrow" as time: want RFC 3339, e.g. 2026-12-01T00:00:00Z`},
		{"merge key", head + "spec: {image: a, <<: {x: 1}}\n", "in:4: spec: merge keys (<<) are not supported; write the fields out"},
		{"nested list", "kind: List\nitems:\n- kind: List\n", "in:3: kind: a List cannot hold another List"},
		{"list unknown field", "kind: List\nextra: 1\n", "in:2: extra: unknown field"},
		{"duplicate map key", "apiVersion: msb.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: x\n  labels: {a: b, a: c}\nspec: {image: a}\n", "in:5: metadata.labels[a]: duplicate key (first at line 5)"},
		{"null fields", head + "spec:\n  image: a\n  env:\n  resources: ~\n", ""},
		{"alias", "apiVersion: msb.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: x, labels: &l {a: b}}\nspec: {image: a}\n", ""},
		{"unknown anchor", "a: *nope\n", "in: invalid YAML: unknown anchor 'nope' referenced"},
		{"redacted pasted back", "apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: s}\nspec: {stringData: {k: <redacted>}}\n", `in:4: spec.stringData[k]: the value is "<redacted>", as printed by get; give the real value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("in", []byte(tt.in))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestDecodeAliasBomb(t *testing.T) {
	// egress: 20000 aliases of a rule whose "to" holds 20000 peers: 4e8 nodes
	// from 400 kB of YAML.
	var b strings.Builder
	b.WriteString("apiVersion: msb.dev/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: x}\n")
	b.WriteString("rule: &r {to: [" + strings.Repeat("{group: public}, ", 20000) + "]}\n")
	b.WriteString("spec: {egress: [" + strings.Repeat("*r, ", 20000) + "]}\n")
	// The work done is measured in bytes allocated, not seconds: expanding
	// the aliases would allocate tens of GiB; refusing early, a few hundred MiB.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Decode("bomb.yaml", []byte(b.String()))
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "bomb.yaml: document too large after expanding aliases") {
		t.Errorf("got %v", err)
	}
	t.Logf("decoding allocated %d MiB", (after.TotalAlloc-before.TotalAlloc)>>20)
	if got := after.TotalAlloc - before.TotalAlloc; got > 2<<30 {
		t.Errorf("decoding allocated %d MiB: the aliases were expanded", got>>20)
	}
}

func TestDecodeFiles(t *testing.T) {
	names := func(docs []Document) string {
		var s []string
		for _, d := range docs {
			s = append(s, d.Source+"#"+d.Object.GetMetadata().Name)
		}
		return strings.Join(s, " ")
	}
	dir := filepath.Join("testdata", "dir")
	tests := []struct {
		name      string
		paths     []string
		recursive bool
		stdin     string
		want      string
		wantErr   string
	}{
		{
			name:  "directory",
			paths: []string{dir},
			want:  "testdata/dir/a.yaml#a testdata/dir/b.json#b",
		},
		{
			name:      "directory recursive",
			paths:     []string{dir},
			recursive: true,
			want:      "testdata/dir/a.yaml#a testdata/dir/b.json#b testdata/dir/sub/c.yml#c",
			wantErr:   "testdata/dir/sub/bad.yaml:4: spec.extra: unknown field",
		},
		{
			name:  "file and stdin",
			paths: []string{filepath.Join(dir, "sub", "c.yml"), "-"},
			stdin: "apiVersion: msb.dev/v1alpha1\nkind: Secret\nmetadata: {name: in}\nspec: {stringData: {k: v}}\n",
			want:  "testdata/dir/sub/c.yml#c -#in",
		},
		{
			name:  "stdin error",
			paths: []string{"-"},
			stdin: "kind: Secret\n",
			wantErr: "-:1: apiVersion: required; want msb.dev/v1alpha1\n" +
				"-:1: metadata.name: required: must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)\n" +
				"-:1: spec: a Secret needs at least one value in stringData (plain) or data (base64)",
		},
		{
			name:    "missing file",
			paths:   []string{filepath.Join(dir, "nope.yaml"), filepath.Join(dir, "a.yaml")},
			want:    "testdata/dir/a.yaml#a",
			wantErr: "testdata/dir/nope.yaml: cannot read: no such file or directory",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := DecodeFiles(tt.paths, tt.recursive, strings.NewReader(tt.stdin))
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.wantErr {
				t.Errorf("error %q, want %q", gotErr, tt.wantErr)
			}
			if got := names(docs); got != tt.want {
				t.Errorf("documents %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDocumentValidateLines(t *testing.T) {
	docs, err := Decode("sb.yaml", readFixture(t, "good/all.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sb := docs[0].Object.(*Sandbox)
	sb.Spec.Env[1].ValueFrom.SecretKeyRef.Key = "bad key"
	sb.Spec.Image = ""
	want := "sb.yaml:6: spec.image: required: an image reference, e.g. python:3.12-slim, oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE\n" +
		`sb.yaml:14: spec.env[1].valueFrom.secretKeyRef.key: invalid key "bad key": must be letters, digits, '-', '_' and '.'`
	if err := docs[0].Validate(); err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	if got := docs[0].LineOf("spec.volumes[0].readOnly"); got != 17 {
		t.Errorf("LineOf = %d, want 17", got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, dir := range []string{"good", "errors", "dir", "dir/sub"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte(`{"kind":"List","items":[{"kind":"Sandbox","apiVersion":"msb.dev/v1alpha1","metadata":{"name":"a\/b"},"spec":{"image":"\ud83d"}}]}`))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("kind: Sandbox\nspec: &s {env: [*s]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Decode("fuzz", data)
		for _, d := range docs {
			if d.Object == nil {
				t.Fatal("nil object")
			}
			// What decodes cleanly must validate, default and print.
			if err := d.Validate(); err != nil {
				t.Fatalf("decoded document does not validate: %v", err)
			}
			SetDefaults(d.Object)
			if errs := Validate(d.Object); len(errs) > 0 {
				t.Fatalf("defaulted document does not validate: %v", errs)
			}
			if _, err := ToYAML(d.Object); err != nil {
				t.Fatal(err)
			}
			if _, err := ToJSON(d.Object); err != nil {
				t.Fatal(err)
			}
		}
		if err != nil {
			_ = err.Error()
		}
	})
}
