package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCompletionFromRunningMsbd loads the real msbctl's bash completion into
// bash and completes `msbctl get sandbox <TAB>` against a running msbd: the
// names offered are the sandboxes it holds.
func TestCompletionFromRunningMsbd(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("bash is not installed (%v): the completion script cannot be run", err)
	}
	d := startDaemon(t)
	d.apply(sandboxYAML("alpha", "  operatingMode: Suspended\n", "sleep", "1000"))
	d.apply(sandboxYAML("beta", "  operatingMode: Suspended\n", "sleep", "1000"))
	script := filepath.Join(t.TempDir(), "msbctl.bash")
	if err := os.WriteFile(script, []byte(d.must("completion", "bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	// What bash does at <TAB> after `complete -F __start_msbctl msbctl`;
	// _get_comp_words_by_ref comes from the bash-completion package, and a
	// minimal stand-in takes its place where that is not installed.
	const program = `
[ -r /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
if ! declare -F _get_comp_words_by_ref >/dev/null; then
	_get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
fi
. "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
__start_msbctl msbctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c", program, "bash", script, "msbctl", "get", "sandbox", "")
	cmd.Env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"), "MSB_SOCKET="+d.socket)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completing `msbctl get sandbox <TAB>`: %v", err)
	}
	var offered []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			offered = append(offered, f[0])
		}
	}
	slices.Sort(offered)
	if !slices.Equal(offered, []string{"alpha", "beta"}) {
		t.Fatalf("`msbctl get sandbox <TAB>` offered %q, want alpha and beta", offered)
	}
}
