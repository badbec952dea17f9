package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/vmdriver/container"
)

// densityCount is how many sandboxes TestDensityPastKeyringLimit runs: 210
// by default (past the 200 session keyrings a host uid may hold), more
// with MSB_E2E_DENSITY=N.
func densityCount(t *testing.T) int {
	n := 210
	if s := os.Getenv("MSB_E2E_DENSITY"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("MSB_E2E_DENSITY=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// hostKeys is how many keys the host uid holds (/proc/key-users), 0 if none.
func hostKeys(t *testing.T, uid int) int {
	b, err := os.ReadFile("/proc/key-users")
	if err != nil {
		t.Skipf("no /proc/key-users: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == strconv.Itoa(uid)+":" {
			n, _ := strconv.Atoi(strings.SplitN(f[2], "/", 2)[0])
			return n
		}
	}
	return 0
}

// More sandboxes than a host uid may hold session keyrings
// (kernel.keys.maxkeys, 200 by default) all become Ready when applied at
// once: runc makes no keyring per sandbox. Everything goes after.
func TestDensityPastKeyringLimit(t *testing.T) {
	n := densityCount(t)
	d := startDaemon(t, "--log-level", "info")
	uid := container.DefaultHostID
	keysBefore := hostKeys(t, uid)
	info := d.must("info")
	if !strings.Contains(info, "host limits") || !strings.Contains(info, "room for sandboxes") || !strings.Contains(info, "kernel.pid_max") {
		t.Errorf("msbctl info has no host limits section:\n%s", info)
	}

	var docs []string
	for i := range n {
		docs = append(docs, sandboxYAML(fmt.Sprintf("d%03d", i), "", "sleep", "100000"))
	}
	t0 := time.Now()
	d.apply(strings.Join(docs, "---\n"))

	c := client.New(d.socket)
	var ready int
	var notReady string
	waitFor(t, time.Duration(n)*time.Second, fmt.Sprintf("%d sandboxes Ready", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		objs, _, err := c.List(ctx, v1alpha1.KindSandbox, "default", "")
		if err != nil {
			return false
		}
		ready, notReady = 0, ""
		for _, o := range objs {
			sb := o.(*v1alpha1.Sandbox)
			for _, cd := range sb.Status.Conditions {
				if cd.Type == v1alpha1.ConditionReady {
					if cd.Status == v1alpha1.ConditionTrue {
						ready++
					} else if notReady == "" {
						notReady = sb.Metadata.Name + ": " + cd.Reason + ": " + cd.Message
					}
				}
			}
		}
		return ready == n
	})
	if ready != n {
		t.Fatalf("%d of %d Ready; e.g. %s", ready, n, notReady)
	}
	t.Logf("%d sandboxes Ready %s after the apply began", n, time.Since(t0).Round(time.Millisecond))
	if got := hostKeys(t, uid); got-keysBefore >= n {
		t.Errorf("host uid %d holds %d keys (was %d): a keyring per sandbox", uid, got, keysBefore)
	}
	// Every sandbox is running its own command.
	out := d.must("get", "sb", "-o", "name")
	if got := strings.Count(out, "\n"); got != n {
		t.Errorf("get sb lists %d sandboxes, want %d", got, n)
	}
	if got := d.must("exec", fmt.Sprintf("d%03d", n-1), "--", "echo", "last"); got != "last\n" {
		t.Errorf("exec in the last sandbox: %q", got)
	}

	t0 = time.Now()
	_, stderr, code := d.ctl("delete", "sandboxes", "--all", "--wait", "--timeout="+strconv.Itoa(2*n)+"s")
	t.Logf("deleted in %s", time.Since(t0).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("delete --all: exit %d: %s", code, stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.stateDir, "sandboxes")); len(ents) != 0 {
		t.Errorf("%d sandbox directories left after delete --all --wait", len(ents))
	}
}
