package container

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent"
)

// Names in the agent directory (the contract with msb-agent, see vmdriver/agent).
// The agent directory's file names are the agent protocol's.
const (
	agentConfigFile   = agent.ConfigFile
	agentExitCodeFile = agent.ExitCodeFile
	agentBinaryFile   = "msb-agent"
)

// staleRunFiles are removed before every start so State never reports the
// previous run's exit code.
var staleRunFiles = []string{agent.ReadyFile, agentExitCodeFile, agent.ExitSignalFile, agent.SocketFile}

// prepareAgentDir creates dir (owned by the sandbox's root, which writes
// there), the placeholder the agent binary is bind-mounted over, and
// config.json. The sandbox may have left anything in dir, so every access goes
// through an os.Root and never follows a symlink out of it.
func (d *Driver) prepareAgentDir(dir string, spec vmdriver.Spec, ids sandboxIDs) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if fi, err := os.Lstat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := os.Lchown(dir, int(ids.UID), int(ids.GID)); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	// Placeholder: must be a regular file for the bind mount of the binary.
	if fi, err := root.Lstat(agentBinaryFile); err == nil && !fi.Mode().IsRegular() {
		if err := root.RemoveAll(agentBinaryFile); err != nil {
			return err
		}
	}
	if f, err := root.OpenFile(agentBinaryFile, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return err
	}

	cfg := agent.Config{
		Args:        spec.Args,
		Env:         spec.Env,
		WorkingDir:  spec.WorkingDir,
		UID:         spec.UID,
		GID:         spec.GID,
		LogMaxBytes: spec.LogMaxBytes,
		Hostname:    spec.Hostname,
	}
	if cfg.Args == nil {
		cfg.Args = []string{}
	}
	if cfg.Env == nil {
		cfg.Env = []string{}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomicAs(root, agentConfigFile, append(b, '\n'), ids)
}

// writeAtomic writes name in root through a fresh temporary file (O_EXCL, so
// never through a planted symlink) and a rename, readable only by the
// sandbox's root.
func writeAtomicAs(root *os.Root, name string, data []byte, ids sandboxIDs) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := "." + name + "." + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chown(int(ids.UID), int(ids.GID))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// clearRunState removes what a previous run of the agent left behind.
func clearRunState(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, name := range staleRunFiles {
		if err := root.RemoveAll(name); err != nil {
			return err
		}
	}
	return nil
}

// readExitCode returns the main command's exit code if the agent wrote one.
// The file is the sandbox's; agent.ReadExitCode follows no symlink, opens no
// FIFO and reads a few bytes at most.
func readExitCode(dir string) (code int, ok bool) {
	code, ok, err := agent.ReadExitCode(dir)
	return code, ok && err == nil
}
