package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testNow is the clock of every golden file.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	if os.Getenv(runAsMsbctl) == "1" {
		// The completion test's shell runs this binary as msbctl.
		main()
	}
	now = func() time.Time { return testNow }
	os.Exit(m.Run())
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		var b strings.Builder
		writeUnified(&b, "want/"+name, "got/"+name, lineDiff(splitLines(string(want)), splitLines(got)), 2)
		t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, b.String())
	}
}

func TestFlagParsing(t *testing.T) {
	type result struct {
		Output, Namespace string
		All, Watch        bool
		Args              []string
	}
	parse := func(args ...string) (result, error) {
		o := &getOptions{}
		fs := o.flags()
		err := fs.parse(args)
		return result{o.output, o.namespace, o.allNamespaces, o.watch, fs.args()}, err
	}
	tests := []struct {
		args []string
		want result
	}{
		{[]string{"sb", "x", "-o", "yaml"}, result{"yaml", "default", false, false, []string{"sb", "x"}}},
		{[]string{"-o", "yaml", "sb", "x"}, result{"yaml", "default", false, false, []string{"sb", "x"}}},
		{[]string{"sb", "-oyaml", "x"}, result{"yaml", "default", false, false, []string{"sb", "x"}}},
		{[]string{"sb", "-o=json", "x"}, result{"json", "default", false, false, []string{"sb", "x"}}},
		{[]string{"--output=wide", "sb"}, result{"wide", "default", false, false, []string{"sb"}}},
		{[]string{"--output", "name", "sb"}, result{"name", "default", false, false, []string{"sb"}}},
		{[]string{"sb", "-n", "prod", "-w"}, result{"table", "prod", false, true, []string{"sb"}}},
		{[]string{"sb", "--namespace=prod", "--watch=false"}, result{"table", "prod", false, false, []string{"sb"}}},
		{[]string{"-Aw", "sb"}, result{"table", "default", true, true, []string{"sb"}}},
		{[]string{"sb", "--", "-o", "x"}, result{"table", "default", false, false, []string{"sb", "-o", "x"}}},
		{[]string{"sb", "-"}, result{"table", "default", false, false, []string{"sb", "-"}}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got, err := parse(tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	errs := []struct {
		args []string
		want string
	}{
		{[]string{"sb", "--foo"}, `unknown flag --foo for "get"; see 'msbctl get --help'`},
		{[]string{"sb", "-z"}, `unknown flag -z for "get"`},
		{[]string{"sb", "-o"}, `flag -o needs a value`},
		{[]string{"sb", "--output"}, `flag --output needs a value`},
		{[]string{"sb", "--watch=maybe"}, `invalid value for --watch`},
	}
	for _, tt := range errs {
		_, err := parse(tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got error %v, want it to contain %q", tt.args, err, tt.want)
		}
	}
}

func TestFlagKinds(t *testing.T) {
	// exec: flags end at the command; clustered booleans; repeatable -e.
	o := &execOptions{}
	fs := o.flags()
	if err := fs.parse([]string{"-it", "-e", "A=1", "web", "-eB=2", "-w", "/tmp", "--", "ls", "-la", "-n"}); err != nil {
		t.Fatal(err)
	}
	if !o.stdin || !o.tty || o.workdir != "/tmp" || !reflect.DeepEqual(o.env, []string{"A=1", "B=2"}) {
		t.Errorf("exec options: %+v", o)
	}
	if want := []string{"web", "ls", "-la", "-n"}; !reflect.DeepEqual(fs.args(), want) {
		t.Errorf("exec args %q, want %q", fs.args(), want)
	}
	// Without "--" the command's own flags still belong to it.
	o = &execOptions{}
	fs = o.flags()
	if err := fs.parse([]string{"web", "-i", "ls", "-la"}); err != nil {
		t.Fatal(err)
	}
	if !o.stdin || !reflect.DeepEqual(fs.args(), []string{"web", "ls", "-la"}) {
		t.Errorf("exec without --: stdin=%v args=%q", o.stdin, fs.args())
	}

	// --dry-run takes an optional value; durations; --wait=false.
	a := &applyOptions{}
	fs = a.flags()
	if err := fs.parse([]string{"--dry-run", "-f", "x.yaml", "-f=y.yaml", "-R"}); err != nil {
		t.Fatal(err)
	}
	if a.dryRun != dryRunClient || !a.recursive || !reflect.DeepEqual(a.files, []string{"x.yaml", "y.yaml"}) {
		t.Errorf("apply options: %+v", a)
	}
	d := &deleteOptions{}
	fs = d.flags()
	if err := fs.parse([]string{"sb", "x", "--wait=false", "--timeout", "90s"}); err != nil {
		t.Fatal(err)
	}
	if d.wait || d.timeout != 90*time.Second {
		t.Errorf("delete options: wait=%v timeout=%v", d.wait, d.timeout)
	}
	if !fs.changed("wait") || fs.changed("namespace") {
		t.Errorf("changed: wait=%v namespace=%v", fs.changed("wait"), fs.changed("namespace"))
	}
}

func TestFindCommand(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"get", "sb"}, 0},
		{[]string{"-o", "yaml", "get", "sb", "x"}, 2},
		{[]string{"-n", "prod", "get"}, 2},
		{[]string{"--socket", "/tmp/s", "version"}, 2},
		{[]string{"--socket=/tmp/s", "version"}, 1},
		{[]string{"-A", "get", "sb"}, 1},
		{[]string{"-w", "get", "sb"}, 1},
		{[]string{"-f", "x.yaml", "apply"}, 2},
		{[]string{"--", "get"}, -1},
		{[]string{"-A"}, -1},
	}
	for _, tt := range tests {
		if got := findCommand(tt.args); got != tt.want {
			t.Errorf("findCommand(%q) = %d, want %d", tt.args, got, tt.want)
		}
	}
}

func TestParseRefs(t *testing.T) {
	kind, refs, err := parseRefs([]string{"sb", "a", "b"})
	if err != nil || kind.Kind != v1alpha1.KindSandbox || len(refs) != 2 || refs[1].name != "b" {
		t.Errorf("sb a b: %v %v %v", kind, refs, err)
	}
	for _, short := range []string{"sandbox", "sandboxes", "sb", "Sandbox"} {
		if k, _, err := parseRefs([]string{short}); err != nil || k.Kind != v1alpha1.KindSandbox {
			t.Errorf("%s: %v %v", short, k, err)
		}
	}
	for name, want := range map[string]string{"netpol": "NetworkPolicy", "networkpolicy": "NetworkPolicy", "secrets": "Secret", "ev": "Event", "events": "Event"} {
		if k, _, err := parseRefs([]string{name}); err != nil || k.Kind != want {
			t.Errorf("%s: %v %v", name, k, err)
		}
	}
	kind, refs, err = parseRefs([]string{"sandbox/x", "netpol/y"})
	if err != nil || kind != nil || len(refs) != 2 || refs[0].String() != "sandbox/x" || refs[1].String() != "networkpolicy/y" {
		t.Errorf("KIND/NAME: %v %v %v", kind, refs, err)
	}
	for _, bad := range [][]string{{}, {"pods"}, {"sb", "netpol/y"}, {"sb/"}, {"/x"}, {"pods/x"}} {
		if _, _, err := parseRefs(bad); err == nil {
			t.Errorf("parseRefs(%q): no error", bad)
		}
	}
	if n, err := parseSandboxName("sb/web"); err != nil || n != "web" {
		t.Errorf("sb/web: %q %v", n, err)
	}
	if n, err := parseSandboxName("web"); err != nil || n != "web" {
		t.Errorf("web: %q %v", n, err)
	}
	if _, err := parseSandboxName("secret/web"); err == nil {
		t.Error("secret/web: no error")
	}
}

func TestFormatAge(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-5 * time.Second, "<invalid>"},
		{-500 * time.Millisecond, "0s"},
		{0, "0s"},
		{5 * time.Second, "5s"},
		{119 * time.Second, "119s"},
		{3 * time.Minute, "3m"},
		{3*time.Minute + 20*time.Second, "3m20s"},
		{45 * time.Minute, "45m"},
		{2 * time.Hour, "120m"},
		{3 * time.Hour, "3h"},
		{5*time.Hour + 10*time.Minute, "5h10m"},
		{20 * time.Hour, "20h"},
		{4 * 24 * time.Hour, "4d"},
		{3*24*time.Hour + 4*time.Hour, "3d4h"},
		{30 * 24 * time.Hour, "30d"},
		{3 * 365 * 24 * time.Hour, "3y"},
		{10 * 365 * 24 * time.Hour, "10y"},
	}
	for _, tt := range tests {
		if got := formatAge(tt.d); got != tt.want {
			t.Errorf("formatAge(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestLineDiff(t *testing.T) {
	a := splitLines("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n")
	b := splitLines("a\nb\nC\nd\ne\nf\ng\nh\ni\nj\nk\n")
	var out strings.Builder
	if !writeUnified(&out, "live", "desired", lineDiff(a, b), 2) {
		t.Fatal("no change reported")
	}
	want := `--- live
+++ desired
@@ -1,5 +1,5 @@
 a
 b
-c
+C
 d
 e
@@ -9,2 +9,3 @@
 i
 j
+k
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if writeUnified(&out, "x", "y", lineDiff(a, a), 3) {
		t.Error("change reported for equal input")
	}
	// Everything added (a created object).
	out.Reset()
	writeUnified(&out, "/dev/null", "desired", lineDiff(nil, []string{"x", "y"}), 3)
	if want := "--- /dev/null\n+++ desired\n@@ -0,0 +1,2 @@\n+x\n+y\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

func TestWaitFor(t *testing.T) {
	ready := &v1alpha1.Sandbox{Status: v1alpha1.SandboxStatus{Phase: v1alpha1.PhaseRunning,
		Conditions: []v1alpha1.Condition{{Type: "Ready", Status: "True"}}}}
	notReady := &v1alpha1.Sandbox{Status: v1alpha1.SandboxStatus{Phase: v1alpha1.PhasePending,
		Conditions: []v1alpha1.Condition{{Type: "Ready", Status: "False"}}}}
	tests := []struct {
		for_     string
		obj      v1alpha1.Object
		want     bool
		wantFail bool
	}{
		{"condition=Ready", ready, true, false},
		{"condition=ready", ready, true, false},
		{"condition=Ready", notReady, false, false},
		{"condition=Ready=False", notReady, true, false},
		{"condition=Ready", nil, false, false},
		{"delete", nil, true, false},
		{"delete", ready, false, false},
		{"jsonpath={.status.phase}=Running", ready, true, false},
		{"jsonpath='{.status.phase}'=Running", notReady, false, false},
		{"jsonpath={.status.conditions.0.status}=True", ready, true, false},
		{"nonsense", nil, false, true},
		{"jsonpath=status.phase", nil, false, true},
	}
	for _, tt := range tests {
		c, err := parseWaitFor(tt.for_)
		if tt.wantFail {
			if err == nil {
				t.Errorf("%s: no error", tt.for_)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.for_, err)
			continue
		}
		var obj v1alpha1.Object
		if tt.obj != nil {
			obj = tt.obj
		}
		if got := c.met(obj); got != tt.want {
			t.Errorf("%s on %v: %v, want %v", tt.for_, tt.obj != nil, got, tt.want)
		}
	}
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestApplyClientDryRunErrors(t *testing.T) {
	code, out, errs := runCLI(t, "apply", "-f", "testdata/bad.yaml", "--dry-run=client", "--socket", "/nonexistent/msbd.sock")
	if code != exitFail {
		t.Errorf("exit %d, want 1", code)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{
		"testdata/bad.yaml:5: spec.image: required",
		"testdata/bad.yaml:6: spec.restartPolicy: unsupported value \"Sometimes\"",
		"testdata/bad.yaml:18: spec.egress[0].to[0].cidr: invalid CIDR",
		"nothing was applied",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestApplyClientDryRunOffline(t *testing.T) {
	code, out, errs := runCLI(t, "--socket", "/nonexistent/msbd.sock", "apply", "--dry-run=client", "-f", "testdata/good.yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if want := "secret/openai created (dry run)\nsandbox/web created (dry run)\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	// Printing the objects never shows a secret value.
	code, out, errs = runCLI(t, "--socket", "/nonexistent/msbd.sock", "apply", "--dry-run=client", "-f", "testdata/good.yaml", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Contains(out, "sk-very-secret-value") || !strings.Contains(out, v1alpha1.Redacted) {
		t.Errorf("secret value not redacted:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"get", "sb", "--foo"}, exitUsage, `unknown flag --foo for "get"; see 'msbctl get --help'`},
		{[]string{"get"}, exitUsage, "you must name a resource type"},
		{[]string{"get", "pods"}, exitFail, `unknown resource type "pods"`},
		{[]string{"apply"}, exitUsage, "no manifests given"},
		{[]string{"get", "sb", "-o", "xml"}, exitUsage, `unknown output format "xml"`},
		{[]string{"wait", "sb/x", "--for=sometime"}, exitUsage, "--for="},
		{[]string{"exec", "web"}, exitUsage, "no command given"},
		{[]string{"logs"}, exitUsage, "want exactly one sandbox name"},
		{[]string{"get", "sb", "--socket", "/nonexistent/msbd.sock"}, exitFail, "Error: cannot reach msbd"},
	}
	for _, tt := range tests {
		code, _, errs := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
	// Help goes to stdout and succeeds.
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "get"}, {"get", "-h"}, {"exec", "--help"}, {}} {
		code, out, _ := runCLI(t, args...)
		if code != exitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q", args, code, out)
		}
	}
}
