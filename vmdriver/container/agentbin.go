package container

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The agent binary a sandbox runs is executable but not readable by it.
//
// The agent (PID 1) and every trampoline it starts (msb-agent
// enter-workload, run with the workload's credentials) make themselves
// non-dumpable, but only once their Go runtime has started: for about a
// millisecond after execve a sandbox process of the same uid could ptrace
// them — a trampoline not yet moved into the workload cgroup could be made
// to fork there, past the workload's limits. The kernel closes that window
// itself when the executable is not readable by the process that runs it
// (would_dump in fs/exec.c): the new image is non-dumpable from its first
// instruction, and its mm's user namespace is raised to one privileged
// over the file, so that only CAP_SYS_PTRACE there could trace it.
//
// So the sandbox gets a copy owned by host root with mode 0711. Host root
// is mapped in no sandbox's user namespace, so a sandbox's root and its
// CAP_DAC_OVERRIDE do not apply to the file (capable_wrt_inode_uidgid): it
// may execute it, not read it, and the raised namespace is the host's.
// The copy is named by its content's hash, so replacing the agent never
// changes the binary under a sandbox that was created with the old one.
const agentBinDir = "agent-bin"

var agentCopies sync.Map // "stateDir\x00dev:ino:size:mtime:ctime" → path of the copy

// execOnlyAgentMount points the bundle's agent binary mount at the
// exec-only copy of its source.
func (d *Driver) execOnlyAgentMount(s *specs.Spec) error {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == agentBinary {
			p, err := execOnlyAgent(d.opts.StateDir, s.Mounts[i].Source)
			if err != nil {
				return err
			}
			s.Mounts[i].Source = p
		}
	}
	return nil
}

// execOnlyAgent returns the path of the root-owned, mode 0711 copy of src
// under stateDir, making it on first use.
func execOnlyAgent(stateDir, src string) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("agent binary: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("agent binary %s: no stat", src)
	}
	key := fmt.Sprintf("%s\x00%d:%d:%d:%d.%d:%d.%d", stateDir, st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	if p, ok := agentCopies.Load(key); ok {
		if _, err := os.Stat(p.(string)); err == nil {
			return p.(string), nil
		}
	}
	p, err := copyExecOnly(filepath.Join(stateDir, agentBinDir), src)
	if err != nil {
		return "", fmt.Errorf("agent binary: %w", err)
	}
	agentCopies.Store(key, p)
	return p, nil
}

// copyExecOnly copies src into dir as msb-agent-<sha256 prefix>, mode
// 0711, unless that file is there already.
func copyExecOnly(dir, src string) (string, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	// A bind mount keeps its source's noexec, and in the sandbox's user
	// namespace runc cannot clear it: say so instead of a start that fails.
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err == nil && sfs.Flags&unix.ST_NOEXEC != 0 {
		return "", fmt.Errorf("%s is on a noexec mount: the sandboxes' agent runs from there; put the state directory on a filesystem that allows exec", dir)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".msb-agent-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // gone after the rename
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), in)
	if err == nil {
		err = tmp.Chmod(0o711)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "msb-agent-"+hex.EncodeToString(h.Sum(nil))[:24])
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == 0o711 {
		return dst, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}
