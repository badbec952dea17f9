package main

import (
	"io"
	"strings"
	"testing"
)

// TestHelpPages keeps every help page in testdata/help*.golden, and checks
// that every command has the parts of a kubectl-style page.
func TestHelpPages(t *testing.T) {
	root := newRootCommand(&env{stdout: io.Discard, stderr: io.Discard})
	pages := map[string][]string{"help": {"--help"}}
	for _, c := range root.Commands() {
		pages["help-"+c.Name()] = []string{c.Name(), "--help"}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%s: want a short and a long description and examples", c.Name())
		}
	}
	for name, args := range pages {
		code, out, errs := runCLI(t, args...)
		if code != exitOK || errs != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errs)
		}
		golden(t, name, out)
	}

	// Every way of asking shows the same page.
	_, want, _ := runCLI(t, "get", "--help")
	for _, args := range [][]string{{"help", "get"}, {"get", "-h"}, {"-h", "get"}, {"help", "-n", "get"}, {"get", "sb", "-o", "yaml", "-h"}} {
		if code, out, _ := runCLI(t, args...); code != exitOK || out != want {
			t.Errorf("%q: exit %d, not get's help page:\n%s", args, code, out)
		}
	}
	_, want, _ = runCLI(t, "--help")
	for _, args := range [][]string{{}, {"help"}, {"-n", "x", "-h"}} {
		if code, out, _ := runCLI(t, args...); code != exitOK || out != want {
			t.Errorf("%q: exit %d, not the main help page:\n%s", args, code, out)
		}
	}
	// exec's flags end at the command: -h after it is the command's.
	_, want, _ = runCLI(t, "exec", "--help")
	if code, out, _ := runCLI(t, "exec", "web", "-h"); code != exitOK || out != want {
		t.Errorf("exec web -h: exit %d:\n%s", code, out)
	}
	code, _, errs := runCLI(t, "help", "frobnicate")
	if code != exitUsage || !strings.Contains(errs, `error: unknown command "frobnicate"; see 'msbctl --help'`) {
		t.Errorf("help frobnicate: exit %d, %q", code, errs)
	}
}
