package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The host id range sandboxes map to when Options leaves it zero: far above
// the ranges useradd hands out in /etc/subuid and /etc/subgid (100000 and up,
// 65536 per user) and above any account's id, yet inside 32 bits.
const (
	DefaultHostID    = 2000000000
	DefaultIDMapSize = 4097 * SlotSize // the shared range and 4096 sandboxes
)

// idFiles are the account databases CheckIDRange reads (replaced in tests).
type idFiles struct {
	subuid, subgid, passwd, group string
}

var systemIDFiles = idFiles{subuid: "/etc/subuid", subgid: "/etc/subgid", passwd: "/etc/passwd", group: "/etc/group"}

// CheckIDRange refuses a sandbox id range that a host user or group could act
// as: every sandbox's root is host uid hostUID (gid hostGID), so anyone who
// holds an id of [hostUID, hostUID+size) or [hostGID, hostGID+size) could
// reach the agent sockets, the writable layers and the image layers of all
// sandboxes. It checks the subordinate ranges of /etc/subuid and /etc/subgid
// (a user can enter a user namespace mapped to them, e.g. with `podman
// unshare`) and the uids and gids of /etc/passwd and /etc/group. A file that
// does not exist is no objection. Accounts only in other NSS sources (LDAP,
// sssd) are not seen.
func CheckIDRange(hostUID, hostGID, size uint32) error {
	return checkIDRange(systemIDFiles, hostUID, hostGID, size)
}

func checkIDRange(files idFiles, hostUID, hostGID, size uint32) error {
	if size == 0 {
		return errors.New("sandbox id range: size is 0")
	}
	uids := idRange{"uid", uint64(hostUID), uint64(hostUID) + uint64(size)}
	gids := idRange{"gid", uint64(hostGID), uint64(hostGID) + uint64(size)}
	for _, r := range []idRange{uids, gids} {
		if r.end > 1<<32-1 { // 4294967295 is (uid_t)-1, never a valid id
			return fmt.Errorf("sandbox %s range %d-%d does not fit in 32 bits: choose a lower --uid-base or a smaller --uid-size", r.kind, r.start, r.end-1)
		}
	}
	var errs []error
	for _, c := range []struct {
		path string
		r    idRange
		scan func(string, idRange) ([]error, error)
	}{
		{files.subuid, uids, scanSubIDs},
		{files.subgid, gids, scanSubIDs},
		{files.passwd, uids, scanAccounts(2)},
		{files.passwd, gids, scanAccounts(3)},
		{files.group, gids, scanAccounts(2)},
	} {
		found, err := c.scan(c.path, c.r)
		if err != nil {
			return err
		}
		errs = append(errs, found...)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("sandbox id range (uids %s, gids %s) is not reserved for msb: %w", uids, gids, errors.Join(errs...))
}

// idRange is [start, end).
type idRange struct {
	kind       string // "uid" or "gid"
	start, end uint64
}

func (r idRange) String() string { return fmt.Sprintf("%d-%d", r.start, r.end-1) }

func (r idRange) overlaps(start, end uint64) bool { return start < r.end && r.start < end }

// scanSubIDs reports the lines of a subuid/subgid file ("name:start:count")
// whose range overlaps r.
func scanSubIDs(path string, r idRange) ([]error, error) {
	var found []error
	err := scanLines(path, func(n int, line string) {
		f := strings.Split(line, ":")
		if len(f) != 3 {
			return
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			return
		}
		if r.overlaps(start, start+count) {
			found = append(found, fmt.Errorf("%s:%d: %q gives %s the subordinate %ss %d-%d, which overlap the sandbox %ss %s: %s can act as the sandboxes' root through a user namespace (podman unshare, newuidmap); choose a --uid-base outside it (default %d) or remove the entry",
				path, n, line, f[0], r.kind, start, start+count-1, r.kind, r, f[0], DefaultHostID))
		}
	})
	return found, err
}

// scanAccounts returns a scanner of passwd/group files reporting the entries
// whose numeric field (2: uid of passwd, gid of group; 3: primary gid of
// passwd) lies in r.
func scanAccounts(field int) func(string, idRange) ([]error, error) {
	return func(path string, r idRange) ([]error, error) {
		var found []error
		err := scanLines(path, func(n int, line string) {
			f := strings.Split(line, ":")
			if len(f) <= field {
				return
			}
			id, err := strconv.ParseUint(f[field], 10, 32)
			if err != nil {
				return
			}
			if r.overlaps(id, id+1) {
				found = append(found, fmt.Errorf("%s:%d: %q has %s %d, inside the sandbox %ss %s: that account would act as the sandboxes' root on the host; choose a --uid-base outside it (default %d)",
					path, n, f[0], r.kind, id, r.kind, r, DefaultHostID))
			}
		})
		return found, err
	}
}

// scanLines calls fn with the number and text of every line that is neither
// empty nor a comment. A missing file has no lines.
func scanLines(path string, fn func(n int, line string)) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking the sandbox id range: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(n, line)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("checking the sandbox id range: %s: %w", path, err)
	}
	return nil
}
