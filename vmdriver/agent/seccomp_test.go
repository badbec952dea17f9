package agent

import (
	"golang.org/x/sys/unix"
	"os"
	"strings"
	"testing"
)

// The agent must refuse to run rather than run unfiltered: every way the
// filter can fail to arrive is an error, found before anything is installed
// (these run in the test process, which must stay unfiltered).
func TestInstallSeccompRefusesBadInput(t *testing.T) {
	pipeWith := func(b []byte) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
		fd, err := dupFD(r)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	cases := map[string]struct {
		fd   int
		want string
	}{
		"closed descriptor": {fd: 999, want: "read fd 999"},
		"empty":             {fd: pipeWith(nil), want: "seccomp filter"},
		"not whole insns":   {fd: pipeWith(make([]byte, 13)), want: "seccomp filter"},
		"too big":           {fd: pipeWith(make([]byte, maxFilterBytes+8)), want: "more than"},
	}
	for name, c := range cases {
		err := InstallSeccomp(c.fd)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: InstallSeccomp = %v, want an error with %q", name, err, c.want)
		}
	}
	b, _ := os.ReadFile("/proc/self/status")
	if !strings.Contains(string(b), "Seccomp:\t0") {
		t.Fatalf("a refused filter was installed anyway:\n%s", b)
	}
}

// dupFD returns a descriptor of f's pipe that f no longer owns.
func dupFD(f *os.File) (int, error) {
	defer f.Close()
	return unix.Dup(int(f.Fd()))
}
