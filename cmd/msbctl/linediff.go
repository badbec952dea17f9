package main

import (
	"io"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Unified diffs for "msbctl diff" (and the golden-file tests) come from
// go-difflib, a port of Python's difflib: the same hunk headers as diff -u,
// including "-0,0" for a file that did not exist, and no output at all for
// equal input.

// linePair is the two texts a unified diff compares, as lines without their
// newlines.
type linePair struct{ a, b []string }

// lineDiff pairs a (the old lines) with b (the new) for writeUnified.
func lineDiff(a, b []string) linePair { return linePair{a, b} }

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// writeUnified writes the diff of p as unified diff hunks with context lines
// around each change, under the file names fromName and toName. It reports
// whether there was any change.
func writeUnified(w io.Writer, fromName, toName string, p linePair, context int) bool {
	var b strings.Builder
	// Writing to a strings.Builder does not fail.
	difflib.WriteUnifiedDiff(&b, difflib.UnifiedDiff{
		A:        withNewlines(p.a),
		B:        withNewlines(p.b),
		FromFile: fromName,
		ToFile:   toName,
		Context:  context,
	})
	if b.Len() == 0 {
		return false
	}
	io.WriteString(w, b.String())
	return true
}

// withNewlines ends every line with "\n", as difflib wants its lines.
func withNewlines(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l + "\n"
	}
	return out
}
