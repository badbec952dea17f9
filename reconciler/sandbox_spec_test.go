package reconciler

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/images"
	"msb.dev/msb/secretinject"
	"msb.dev/msb/vmdriver"
)

func TestSandboxSecretEnv(t *testing.T) {
	const value = "s3cr3t-t0ken-value"
	h := newHarness(t)
	sb := h.create("api", func(sb *v1alpha1.Sandbox) {
		sb.Spec.Env = []v1alpha1.EnvVar{
			{Name: "PLAIN", Value: "x"},
			{Name: "API_TOKEN", ValueFrom: &v1alpha1.EnvVarSource{SecretKeyRef: &v1alpha1.SecretKeySelector{Name: "api", Key: "token"}}},
		}
	})

	_, err := h.reconcile("api")
	if err == nil || isTerminal(err) {
		t.Fatalf("Reconcile without the Secret = %v, want a retried error", err)
	}
	wantCalls(t, "secret missing", h.drv.Mutations())
	c := wantCond(t, h.get("api"), v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSecretError)
	if !strings.Contains(c.Message, `secret "api" not found`) || !strings.Contains(c.Message, "API_TOKEN") {
		t.Errorf("Ready message %q, want the env name and the secret", c.Message)
	}

	sec := &v1alpha1.Secret{
		Metadata: v1alpha1.ObjectMeta{Name: "api", Namespace: v1alpha1.DefaultNamespace},
		Spec:     v1alpha1.SecretSpec{StringData: map[string]string{"other": value}},
	}
	if err := h.st.Create(sec); err != nil {
		t.Fatal(err)
	}
	if _, err := h.reconcile("api"); err == nil {
		t.Fatal("Reconcile with the key missing from the Secret succeeded")
	}
	c = wantCond(t, h.get("api"), v1alpha1.ConditionReady, v1alpha1.ConditionFalse, ReasonSecretError)
	if !strings.Contains(c.Message, `has no key "token"`) {
		t.Errorf("Ready message %q, want the missing key", c.Message)
	}
	wantCalls(t, "key missing", h.drv.Mutations())

	sec = &v1alpha1.Secret{}
	if err := h.st.Get(v1alpha1.KindSecret, v1alpha1.DefaultNamespace, "api", sec); err != nil {
		t.Fatal(err)
	}
	sec.Spec.StringData = map[string]string{"token": value}
	if err := h.st.Update(sec); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("api")
	wantCalls(t, "secret present", h.drv.Mutations(), "Create", "Start")
	spec := h.drv.Created()[0]
	want := "API_TOKEN=" + secretinject.Placeholder(sb.Metadata.UID, v1alpha1.DefaultNamespace, "api", "token")
	if !slices.Contains(spec.Env, want) || !strings.HasPrefix(want, "API_TOKEN=msb-placeholder-") {
		t.Errorf("env %q, want %q", spec.Env, want)
	}
	if !slices.Contains(spec.Env, "PLAIN=x") {
		t.Errorf("env %q, want PLAIN=x", spec.Env)
	}
	b, _ := json.Marshal(spec)
	if strings.Contains(string(b), value) {
		t.Fatalf("the secret value reached the driver spec: %s", b)
	}
	got := h.get("api")
	wantCond(t, got, v1alpha1.ConditionReady, v1alpha1.ConditionTrue, "Running")
	b, _ = json.Marshal(got)
	if strings.Contains(string(b), value) {
		t.Errorf("the secret value is in the Sandbox: %s", b)
	}
	for _, ev := range h.events("api") {
		if strings.Contains(ev.Message, value) {
			t.Errorf("the secret value is in event %s: %q", ev.Reason, ev.Message)
		}
	}

	// A new value does not restart the sandbox: the proxy substitutes it.
	h.drv.Reset()
	sec = &v1alpha1.Secret{}
	if err := h.st.Get(v1alpha1.KindSecret, v1alpha1.DefaultNamespace, "api", sec); err != nil {
		t.Fatal(err)
	}
	sec.Spec.StringData = map[string]string{"token": "rotated"}
	if err := h.st.Update(sec); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("api")
	wantCalls(t, "secret rotated", h.drv.Mutations())
}

// The image config and the Sandbox spec merge as in Kubernetes.
func TestSandboxDriverSpecFromImageConfig(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/sh\napp:x:1234:5678::/home/app:/bin/sh\n"
	group := "root:x:0:\nstaff:x:50:\n"
	for _, tc := range []struct {
		name    string
		config  images.Config
		files   map[string]string // in the image's top layer
		spec    func(*v1alpha1.SandboxSpec)
		check   func(t *testing.T, s vmdriver.Spec)
		wantErr string // a terminal error containing this
	}{
		{
			name:   "image defaults",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1", "c2"}, Env: []string{"PATH=/bin", "FOO=img"}, WorkingDir: "/srv"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantStrings(t, "args", s.Args, "/ep", "c1", "c2")
				wantStrings(t, "env", s.Env, "PATH=/bin", "FOO=img", "HOSTNAME=box")
				wantEq(t, "workingDir", s.WorkingDir, "/srv")
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{0, 0})
			},
		},
		{
			name:   "command replaces entrypoint and cmd",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Command = []string{"/bin/sh", "-c"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/bin/sh", "-c") },
		},
		{
			name:   "command and args",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Command = []string{"/bin/sh"}; s.Args = []string{"-c", "true"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/bin/sh", "-c", "true") },
		},
		{
			name:   "args replace cmd",
			config: images.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"c1"}},
			spec:   func(s *v1alpha1.SandboxSpec) { s.Args = []string{"a1"} },
			check:  func(t *testing.T, s vmdriver.Spec) { wantStrings(t, "args", s.Args, "/ep", "a1") },
		},
		{
			name:   "env overrides by name",
			config: images.Config{Cmd: []string{"c"}, Env: []string{"PATH=/bin", "FOO=img", "BAR=img"}},
			spec: func(s *v1alpha1.SandboxSpec) {
				s.Env = []v1alpha1.EnvVar{{Name: "FOO", Value: "sb"}, {Name: "NEW", Value: "1"}}
			},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantStrings(t, "env", s.Env, "PATH=/bin", "BAR=img", "HOSTNAME=box", "FOO=sb", "NEW=1")
			},
		},
		{
			name:   "workingDir from the sandbox",
			config: images.Config{Cmd: []string{"c"}, WorkingDir: "/srv"},
			spec:   func(s *v1alpha1.SandboxSpec) { s.WorkingDir = "/work" },
			check:  func(t *testing.T, s vmdriver.Spec) { wantEq(t, "workingDir", s.WorkingDir, "/work") },
		},
		{
			name:   "workingDir defaults to /",
			config: images.Config{Cmd: []string{"c"}},
			check:  func(t *testing.T, s vmdriver.Spec) { wantEq(t, "workingDir", s.WorkingDir, "/") },
		},
		{
			name:   "numeric user and group",
			config: images.Config{Cmd: []string{"c"}, User: "1000:1000"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1000, 1000})
			},
		},
		{
			name:   "numeric user alone",
			config: images.Config{Cmd: []string{"c"}, User: "1001"},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1001, 1001})
			},
		},
		{
			name:   "named user from /etc/passwd",
			config: images.Config{Cmd: []string{"c"}, User: "app"},
			files:  map[string]string{"etc/passwd": passwd},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1234, 5678})
			},
		},
		{
			name:   "named user and group",
			config: images.Config{Cmd: []string{"c"}, User: "app:staff"},
			files:  map[string]string{"etc/passwd": passwd, "etc/group": group},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "uid:gid", [2]uint32{s.UID, s.GID}, [2]uint32{1234, 50})
			},
		},
		{
			name:    "unknown user",
			config:  images.Config{Cmd: []string{"c"}, User: "nobody"},
			files:   map[string]string{"etc/passwd": passwd},
			wantErr: `"nobody" not found in /etc/passwd`,
		},
		{
			name:    "named user without /etc/passwd",
			config:  images.Config{Cmd: []string{"c"}, User: "app"},
			wantErr: "no /etc/passwd",
		},
		{
			name:    "nothing to run",
			config:  images.Config{Env: []string{"PATH=/bin"}},
			wantErr: "no entrypoint or cmd",
		},
		{
			name:   "resources and volumes",
			config: images.Config{Cmd: []string{"c"}},
			spec: func(s *v1alpha1.SandboxSpec) {
				s.Resources = v1alpha1.ResourceRequirements{CPUs: "0.5", Memory: "512Mi", PIDs: 64}
				s.Volumes = []v1alpha1.Volume{{HostPath: "/data", MountPath: "/mnt", ReadOnly: true}}
			},
			check: func(t *testing.T, s vmdriver.Spec) {
				wantEq(t, "resources", [3]int64{s.MemoryBytes, s.MilliCPUs, s.PIDs}, [3]int64{512 << 20, 500, 64})
				if len(s.Mounts) != 1 || s.Mounts[0] != (vmdriver.Mount{HostPath: "/data", Path: "/mnt", ReadOnly: true}) {
					t.Errorf("mounts = %+v", s.Mounts)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// A lower layer with an /etc/passwd the top layer's shadows.
			lower := h.mkLayer("lower", map[string]string{"etc/passwd": "app:x:1:1::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"})
			top := h.mkLayer("top", tc.files)
			layers := []string{top}
			if tc.files != nil {
				layers = []string{lower, top}
			}
			const ref = "registry.test/custom:1"
			h.imgs.set(&images.Image{Ref: ref, Digest: "sha256:" + strings.Repeat("c", 64), Config: tc.config, Layers: layers})
			h.create("box", func(sb *v1alpha1.Sandbox) {
				sb.Spec.Image = ref
				if tc.spec != nil {
					tc.spec(&sb.Spec)
				}
			})
			_, err := h.reconcile("box")
			if tc.wantErr != "" {
				if !isTerminal(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Reconcile = %v, want a terminal error containing %q", err, tc.wantErr)
				}
				wantCalls(t, "invalid", h.drv.Mutations())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			specs := h.drv.Created()
			if len(specs) != 1 {
				t.Fatalf("created %d specs", len(specs))
			}
			if !slices.Equal(specs[0].Layers, layers) {
				t.Errorf("layers = %q, want %q", specs[0].Layers, layers)
			}
			tc.check(t, specs[0])
		})
	}
}

func wantStrings(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func wantEq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
