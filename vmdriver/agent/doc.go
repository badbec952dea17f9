// Package agent is the protocol between msbd and msb-agent, the PID 1 of every
// sandbox: the shared directory layout, the host-side client and the in-sandbox server.
//
// The host bind-mounts one directory at /.msb in the sandbox. Everything the two sides
// exchange goes through it, so the host can read logs and exit codes even when the
// agent (or the whole sandbox) is gone:
//
//	/.msb/
//	├── msb-agent     the agent binary (bind-mounted file, started as "msb-agent init")
//	├── config.json   Config, written by the host before start (WriteConfig)
//	├── agent.sock    SSH over a unix socket, served by the agent (Dial, Client.Exec)
//	├── ready         created once agent.sock accepts connections (WaitReady)
//	├── log           main command stdout+stderr, raw bytes in arrival order
//	├── log.1         the previous log after rotation; log + log.1 ≤ Config.LogMaxBytes
//	├── exit-signal   signal number that killed the main command, if one did (ReadExitSignal)
//	└── exit-code     decimal exit code of the main command, written atomically (ReadExitCode)
//
// The wire protocol is SSH (golang.org/x/crypto/ssh) rather than something home-made:
// sessions, exec, pty-req, window-change, signal, exit-status and flow control are all
// specified and battle-tested. "exec" carries a JSON ExecRequest-like object instead of
// a shell string so argv is passed exactly. File copy (msbctl cp) is an "exec" whose
// JSON names a copy instead of an argv: the agent itself reads or writes a tar stream
// on the session (copy.go, format in msb.dev/msb/tarcopy).
package agent
