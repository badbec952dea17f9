package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckIDRange(t *testing.T) {
	const debianPasswd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
`
	const debianGroup = "root:x:0:\nsudo:x:27:alice\nnogroup:x:65534:\nalice:x:1000:\n"
	const subAlice = "alice:100000:65536\n"
	for _, tc := range []struct {
		name                   string
		subuid, subgid         string // "-": no file
		passwd, group          string
		hostUID, hostGID, size uint32
		want                   []string // substrings of the error; none: no error
	}{
		{name: "default range, typical host", subuid: subAlice, subgid: subAlice, passwd: debianPasswd, group: debianGroup,
			hostUID: DefaultHostID, hostGID: DefaultHostID, size: DefaultIDMapSize},
		{name: "no files at all", subuid: "-", subgid: "-", passwd: "-", group: "-",
			hostUID: 100000, hostGID: 100000, size: 65536},
		{name: "old default is alice's subuid range", subuid: subAlice, subgid: "-", passwd: debianPasswd, group: debianGroup,
			hostUID: 100000, hostGID: 300000, size: 65536,
			want: []string{"/etc/subuid:1:", `"alice:100000:65536"`, "subordinate uids 100000-165535", "overlap the sandbox uids 100000-165535", "choose a --uid-base outside it"}},
		{name: "gid range in subgid only", subuid: subAlice, subgid: "# comment\n\nalice:100000:65536\nbob:165536:65536\n", passwd: debianPasswd, group: debianGroup,
			hostUID: 500000, hostGID: 200000, size: 65536,
			want: []string{"/etc/subgid:4:", `"bob:165536:65536"`, "subordinate gids 165536-231071", "sandbox gids 200000-265535"}},
		{name: "partial overlap at the end", subuid: "carol:231072:65536\n", subgid: "-", passwd: "-", group: "-",
			hostUID: 200000, hostGID: 500000, size: 31073,
			want: []string{"/etc/subuid:1:", "231072-296607", "sandbox uids 200000-231072"}},
		{name: "adjacent ranges do not overlap", subuid: "a:100000:65536\nb:231072:10\n", subgid: "a:100000:65536\n", passwd: "-", group: "-",
			hostUID: 165536, hostGID: 165536, size: 65536},
		{name: "numeric subuid owner", subuid: "1000:3000000000:65536\n", subgid: "-", passwd: "-", group: "-",
			hostUID: 3000000000, hostGID: 100, size: 1,
			want: []string{`gives 1000 the subordinate uids 3000000000-3000065535`}},
		{name: "account uid in range", subuid: "-", subgid: "-", passwd: debianPasswd + "svc:x:100000:999::/:/bin/false\n", group: debianGroup,
			hostUID: 100000, hostGID: 100000, size: 65536,
			want: []string{"/etc/passwd:5:", `"svc" has uid 100000`, "sandbox uids 100000-165535"}},
		{name: "nobody inside a low range", subuid: "-", subgid: "-", passwd: debianPasswd, group: debianGroup,
			hostUID: 1001, hostGID: 70000, size: 65536,
			want: []string{"/etc/passwd:3:", `"nobody" has uid 65534`}},
		{name: "primary gid of an account", subuid: "-", subgid: "-", passwd: "svc:x:999:2000000005::/:/bin/false\n", group: "-",
			hostUID: 1, hostGID: DefaultHostID, size: 10,
			want: []string{"/etc/passwd:1:", `"svc" has gid 2000000005`}},
		{name: "group gid in range", subuid: "-", subgid: "-", passwd: debianPasswd, group: debianGroup + "msbusers:x:2000065535:alice\n",
			hostUID: DefaultHostID, hostGID: DefaultHostID, size: DefaultIDMapSize,
			want: []string{"/etc/group:5:", `"msbusers" has gid 2000065535`}},
		{name: "every overlap is reported", subuid: subAlice, subgid: subAlice, passwd: debianPasswd, group: debianGroup,
			hostUID: 0, hostGID: 0, size: 200000,
			want: []string{"/etc/subuid:1:", "/etc/subgid:1:", "/etc/passwd:1:", `"root" has uid 0`, `"alice" has gid 1000`, "/etc/group:4:"}},
		{name: "range past 32 bits", subuid: "-", subgid: "-", passwd: "-", group: "-",
			hostUID: 4294967295 - 100, hostGID: 1 << 20, size: 101,
			want: []string{"does not fit in 32 bits"}},
		{name: "empty range", subuid: "-", subgid: "-", passwd: "-", group: "-",
			hostUID: DefaultHostID, hostGID: DefaultHostID, size: 0,
			want: []string{"size is 0"}},
		{name: "malformed lines are skipped", subuid: "junk\nx:y:z\nq:5:0\n", subgid: ":::\n", passwd: "short:x\nbad:x:notanumber:nan::/:\n", group: "g:x:\n",
			hostUID: 1, hostGID: 1, size: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := func(name, content string) string {
				p := filepath.Join(dir, name)
				if content != "-" {
					must(t, os.WriteFile(p, []byte(content), 0o644))
				}
				return p
			}
			files := idFiles{subuid: file("subuid", tc.subuid), subgid: file("subgid", tc.subgid), passwd: file("passwd", tc.passwd), group: file("group", tc.group)}
			err := checkIDRange(files, tc.hostUID, tc.hostGID, tc.size)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("checkIDRange: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkIDRange: nil, want an error with %q", tc.want)
			}
			// Messages name the real files; the test's paths stand in for them.
			msg := strings.NewReplacer(files.subuid, "/etc/subuid", files.subgid, "/etc/subgid", files.passwd, "/etc/passwd", files.group, "/etc/group").Replace(err.Error())
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestCheckIDRangeUnreadable(t *testing.T) {
	dir := t.TempDir() // a directory where a file is expected: read fails
	err := checkIDRange(idFiles{subuid: dir}, DefaultHostID, DefaultHostID, DefaultIDMapSize)
	if err == nil || !strings.Contains(err.Error(), "checking the sandbox id range") {
		t.Fatalf("checkIDRange with an unreadable file: %v", err)
	}
}

// TestCheckIDRangeThisHost: the default range is free on the machine running
// the tests (which the real-runc tests use).
func TestCheckIDRangeThisHost(t *testing.T) {
	if err := CheckIDRange(DefaultHostID, DefaultHostID, DefaultIDMapSize); err != nil {
		t.Fatal(err)
	}
}
