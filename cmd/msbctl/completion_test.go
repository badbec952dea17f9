package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// runAsMsbctl, set to 1 in its environment, makes the test binary be msbctl
// (see TestMain): the shell in TestCompletionBash runs it at every <TAB>.
const runAsMsbctl = "MSBCTL_TEST_RUN_AS_MSBCTL"

// bashCompleter sources "msbctl completion bash" into a non-interactive bash
// and completes command lines the way bash does at <TAB>.
type bashCompleter struct {
	bash   string
	dir    string // holds msbctl (this test binary) and the script
	script string
}

func newBashCompleter(t *testing.T) *bashCompleter {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("bash is not installed (%v): the completion script cannot be run", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "msbctl")); err != nil {
		t.Fatal(err)
	}
	code, script, errs := runCLI(t, "completion", "bash")
	if code != exitOK || !strings.Contains(script, "__start_msbctl") {
		t.Fatalf("completion bash: exit %d, %s", code, errs)
	}
	return &bashCompleter{bash: bash, dir: dir, script: writeManifest(t, dir, "msbctl.bash", script)}
}

// completeProgram is what bash does at <TAB> after "complete -F
// __start_msbctl msbctl": it sets COMP_* and calls the function. The words
// come as arguments, the last being the one under the cursor. bash-completion
// provides _get_comp_words_by_ref, which the script needs; where the package
// is not installed a minimal stand-in takes the words as given.
const completeProgram = `
if [ -r /usr/share/bash-completion/bash_completion ]; then
	. /usr/share/bash-completion/bash_completion
fi
if ! declare -F _get_comp_words_by_ref >/dev/null; then
	_get_comp_words_by_ref() {
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD-1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	}
fi
. "$MSBCTL_SCRIPT"
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMP_TYPE=9
__start_msbctl msbctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`

// complete returns what bash offers for line, the cursor at its end (a
// trailing space starts a new, empty word), whether the script turned file
// completion off, and what else the shell wrote to stderr.
func (b *bashCompleter) complete(t *testing.T, sock, line string) (offered []string, noFiles bool, stderr string) {
	t.Helper()
	words := strings.Fields(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	// A bound so that a hung completion fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	debug := filepath.Join(t.TempDir(), "debug.log")
	cmd := exec.CommandContext(ctx, b.bash, append([]string{"--norc", "--noprofile", "-c", completeProgram, "bash"}, words...)...)
	cmd.Env = append(os.Environ(),
		"PATH="+b.dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"MSB_SOCKET="+sock,
		"MSBCTL_SCRIPT="+b.script,
		runAsMsbctl+"=1",
		// The script logs its steps there, among them the directives it obeys.
		"BASH_COMP_DEBUG_FILE="+debug,
	)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completing %q: %v\n%s", line, err, errb.String())
	}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// With several candidates bash shows descriptions after the name.
		if f := strings.Fields(l); len(f) > 0 {
			offered = append(offered, f[0])
		}
	}
	// compopt works only in a completion bash itself started, and says so.
	for _, l := range strings.SplitAfter(errb.String(), "\n") {
		if !strings.Contains(l, "compopt: not currently executing completion function") {
			stderr += l
		}
	}
	log, _ := os.ReadFile(debug)
	return offered, strings.Contains(string(log), "Activating no file completion"), stderr
}

func createSandbox(t *testing.T, c *client.Client, ns, name string) {
	t.Helper()
	sb := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: ns},
		Spec:     v1alpha1.SandboxSpec{Image: "busybox"},
	}
	if _, err := c.Create(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
}

// TestCompletionBash runs the generated bash script in a real bash against
// a real API server: names come from msbd, of the kind and namespace the
// command line names.
func TestCompletionBash(t *testing.T) {
	b := newBashCompleter(t)
	sock, c := newServer(t)
	createSandbox(t, c, "default", "web")
	createSandbox(t, c, "default", "worker")
	createSandbox(t, c, "prod", "db")
	setReady(t, c, "web", v1alpha1.ConditionTrue, v1alpha1.PhaseRunning) // a phase: a description
	if code, _, errs := cli(t, sock, "apply", "-f", "testdata/good.yaml", "-n", "prod"); code != exitOK {
		t.Fatalf("apply: %s", errs)
	}

	tests := []struct {
		line string
		want []string
	}{
		{"msbctl get sandbox ", []string{"web", "worker"}},
		{"msbctl get sandbox w", []string{"web", "worker"}},
		{"msbctl get sandbox we", []string{"web"}},
		{"msbctl get sb web ", []string{"worker"}},
		{"msbctl get sb -o yaml ", []string{"web", "worker"}},
		{"msbctl -n prod get sandboxes ", []string{"db", "web"}}, // web of good.yaml, applied in prod
		{"msbctl get sb --namespace prod ", []string{"db", "web"}},
		{"msbctl get secret -n prod ", []string{"openai"}},
		{"msbctl get secret ", nil},
		{"msbctl get ", []string{"sandboxes", "networkpolicies", "secrets", "events"}},
		{"msbctl get s", []string{"sandboxes", "sandbox", "sb", "secrets", "secret"}},
		{"msbctl get sb/w", []string{"sb/web", "sb/worker"}},
		{"msbctl describe sandbox wo", []string{"worker"}},
		{"msbctl delete ", []string{"sandboxes", "networkpolicies", "secrets"}},
		{"msbctl delete sandbox ", []string{"web", "worker"}},
		{"msbctl wait sandbox/", []string{"sandbox/web", "sandbox/worker"}},
		{"msbctl logs ", []string{"web", "worker"}},
		{"msbctl logs web ", nil},
		{"msbctl exec -it ", []string{"web", "worker"}},
		{"msbctl exec -n prod ", []string{"db", "web"}},
		{"msbctl cp w", []string{"web:", "worker:"}},
		{"msbctl -n ", []string{"default", "prod"}},
		{"msbctl get sb -n p", []string{"prod"}},
		{"msbctl get sb -o ", []string{"table", "wide", "yaml", "json", "name"}},
		{"msbctl completion ", []string{"bash", "zsh", "fish", "powershell"}},
		{"msbctl ver", []string{"version"}},
	}
	for _, tt := range tests {
		got, _, errs := b.complete(t, sock, tt.line)
		if !reflect.DeepEqual(got, tt.want) || errs != "" {
			t.Errorf("%q: got %q, want %q (stderr %q)", tt.line, got, tt.want, errs)
		}
	}
	// Where there are no names, no files are offered either.
	if got, noFiles, _ := b.complete(t, sock, "msbctl get secret "); len(got) != 0 || !noFiles {
		t.Errorf("get secret with none: got %q, file completion off: %v; want nothing, no files", got, noFiles)
	}
	// Manifests are files.
	if _, noFiles, _ := b.complete(t, sock, "msbctl apply -f "); noFiles {
		t.Error("apply -f: file completion is off")
	}

	// msbd unreachable: nothing is offered, no files either, and nothing is said.
	for _, line := range []string{"msbctl get sandbox ", "msbctl logs w", "msbctl -n "} {
		got, noFiles, errs := b.complete(t, filepath.Join(b.dir, "no-msbd.sock"), line)
		if len(got) != 0 || errs != "" || !noFiles {
			t.Errorf("%q without msbd: got %q, file completion off: %v, stderr %q; want nothing, no files, no message", line, got, noFiles, errs)
		}
	}
}

// TestCompletionDirective checks what cobra's protocol returns to every
// shell: names, then ":4" (no file completion), also when msbd is not there.
func TestCompletionDirective(t *testing.T) {
	sock, c := newServer(t)
	createSandbox(t, c, "default", "web")
	code, out, _ := runCLI(t, "__complete", "--socket", sock, "get", "sandbox", "")
	if want := "web\n:4\n"; code != exitOK || out != want {
		t.Errorf("__complete get sandbox: exit %d, %q; want %q", code, out, want)
	}
	code, out, _ = runCLI(t, "__complete", "--socket", "/nonexistent/msbd.sock", "get", "sandbox", "")
	if code != exitOK || out != ":4\n" {
		t.Errorf("__complete without msbd: exit %d, %q; want only the directive", code, out)
	}
	code, out, _ = runCLI(t, "__complete", "apply", "-f", "")
	if code != exitOK || !strings.Contains(out, "yaml") {
		t.Errorf("__complete apply -f: exit %d, %q; want manifest file extensions", code, out)
	}
}

// TestCompletionScripts checks that each shell's script comes out and that a
// wrong shell is a usage error.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "complete -o default -F __start_msbctl msbctl",
		"zsh":        "#compdef msbctl",
		"fish":       "complete -c msbctl",
		"powershell": "Register-ArgumentCompleter",
	} {
		code, out, errs := runCLI(t, "completion", shell)
		if code != exitOK || !strings.Contains(out, want) || errs != "" {
			t.Errorf("completion %s: exit %d, stderr %q; output lacks %q", shell, code, errs, want)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		if code, out, errs := runCLI(t, args...); code != exitUsage || out != "" || !strings.HasPrefix(errs, "error: ") {
			t.Errorf("%q: exit %d, %q %q; want a usage error", args, code, out, errs)
		}
	}
}
