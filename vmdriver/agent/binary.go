package agent

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Locate finds the msb-agent binary (flagPath, else msb-agent beside the
// running executable) and checks that it is a static executable: it runs
// inside images that have no libc of ours. The error says how to build it.
func Locate(flagPath string) (string, error) {
	p := flagPath
	if p == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = filepath.Join(filepath.Dir(self), "msb-agent")
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	const hint = "build it with: CGO_ENABLED=0 go build -o DIR/msb-agent ./cmd/msb-agent (put it beside msbd or pass --agent PATH)"
	f, err := elf.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("msb-agent not found at %s; %s", p, hint)
		}
		return "", fmt.Errorf("msb-agent at %s is not an executable: %v; %s", p, err, hint)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("msb-agent at %s is dynamically linked and would not run inside images; %s", p, hint)
		}
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("msb-agent at %s is not executable; %s", p, hint)
	}
	if strings.ContainsAny(p, "\n") {
		return "", fmt.Errorf("msb-agent path %q is not usable", p)
	}
	return p, nil
}
