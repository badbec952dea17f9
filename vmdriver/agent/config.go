package agent

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Names of the files in the shared directory. They are a contract with the drivers.
const (
	DefaultDir   = "/.msb"
	ConfigFile   = "config.json"
	SocketFile   = "agent.sock"
	ReadyFile    = "ready"
	LogFile      = "log"
	LogOldFile   = "log.1"
	ExitCodeFile = "exit-code"
	// ExitSignalFile holds the signal number that killed the main command,
	// written before ExitCodeFile and only when a signal ended it: the host
	// tells "killed by SIGKILL" (the OOM killer's way) from "exit 137".
	ExitSignalFile = "exit-signal"
)

// DefaultLogMaxBytes caps log+log.1 when Config.LogMaxBytes is not set.
const DefaultLogMaxBytes = 10 << 20

// defaultPath is used to look up commands when the environment has no PATH, as Docker does.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config tells the agent what to run. The host resolves everything (image
// entrypoint/cmd, env merge, user) so the agent stays small and does no policy.
type Config struct {
	// Args is the main command argv. Args[0] may be a bare name: it is looked up
	// in the PATH of Env.
	Args []string `json:"args"`
	// Env (KEY=VALUE) is the main process environment and the base environment of exec.
	Env []string `json:"env"`
	// WorkingDir of the main process and default of exec; "/" when empty.
	WorkingDir string `json:"workingDir"`
	// UID and GID run the main command and exec (from the image config user).
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// LogMaxBytes caps log+log.1; DefaultLogMaxBytes when ≤ 0.
	LogMaxBytes int64 `json:"logMaxBytes"`
	// Hostname is set by the agent when it runs as PID 1 (a microVM has nobody else to do it).
	Hostname string `json:"hostname"`
}

func (c *Config) setDefaults() {
	if c.WorkingDir == "" {
		c.WorkingDir = "/"
	}
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = DefaultLogMaxBytes
	}
}

// WriteConfig writes dir/config.json atomically and removes the run state a previous
// start may have left behind (ready, exit-code, agent.sock), so WaitReady and
// ReadExitCode after the next start never see stale files. Call it before every start.
func WriteConfig(dir string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, ConfigFile), append(b, '\n')); err != nil {
		return err
	}
	return clearRunState(dir)
}

// ReadConfig reads dir/config.json and applies defaults.
func ReadConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return cfg, fmt.Errorf("agent config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("agent config %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if len(cfg.Args) == 0 {
		return cfg, fmt.Errorf("agent config %s: args is empty: the sandbox has no command to run", filepath.Join(dir, ConfigFile))
	}
	cfg.setDefaults()
	return cfg, nil
}

func clearRunState(dir string) error {
	for _, name := range []string{ReadyFile, ExitCodeFile, ExitSignalFile, SocketFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writeFileAtomic writes through a temporary file and a rename so a reader sees
// either nothing or the whole content, never a torn write.
func writeFileAtomic(path string, data []byte) error {
	// O_EXCL with a fresh name: a symlink planted by the sandbox under the
	// temporary name is never followed.
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := fmt.Sprintf("%s.tmp-%x", path, rnd)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
