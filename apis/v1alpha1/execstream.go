package v1alpha1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The exec stream protocol. POST .../sandboxes/NAME/exec with
// "Connection: Upgrade" and "Upgrade: msb-exec" and the command in the query
// (command, env: repeated; workingDir; tty, term, rows, cols; stdin=true when
// the client sends input) is answered with 101 Switching Protocols, after
// which both sides exchange frames: one byte naming the stream, the payload
// length as 4 bytes big-endian, the payload.
// Stdin is flow-controlled: see StreamCredit.
//
// msbd speaks the agent's own protocol (SSH) to the sandbox and relays; the
// CLI only frames bytes. It starts no cryptography of its own, which in a
// process that lives for one command costs more than the command (and msbd
// can keep its agent connections warm).
const ExecProtocol = "msb-exec"

// Streams of the exec protocol.
const (
	StreamStdin  byte = 0 // client → msbd; an empty payload is end of input
	StreamStdout byte = 1 // msbd → client
	StreamStderr byte = 2 // msbd → client (nothing with a TTY)
	StreamExit   byte = 3 // msbd → client, last frame: JSON ExecResult
	StreamResize byte = 4 // client → msbd: JSON WindowSize
	StreamSignal byte = 5 // client → msbd: the signal number in decimal
	StreamCredit byte = 6 // msbd → client: more stdin bytes it may send (uint32 BE)
)

// Stdin is flow-controlled so that msbd never has to stop reading the
// client's frames (signals, resizes, a hang-up) while a command is slow to
// read its input: msbd grants StdinWindow bytes when the exec starts and
// grants each byte again once it went on to the command; a client sending
// beyond its grant ends the exec.
const StdinWindow = 256 << 10

// MaxFramePayload bounds one frame; larger frames are a protocol error.
const MaxFramePayload = 1 << 20

// ExecResult ends an exec stream: the command's exit code (128+signal when
// killed by one), or why it could not be learned.
type ExecResult struct {
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
	// Reason says why the command ended when it was not its own doing:
	// ExecReasonOOMKilled when the sandbox's memory limit killed it,
	// "AgentUnresponsive" when the sandbox's agent stopped answering.
	Reason string `json:"reason,omitempty"`
}

// ExecReasonOOMKilled is ExecResult.Reason for a command the kernel's OOM
// killer ended because the sandbox reached its memory limit.
const ExecReasonOOMKilled = "OOMKilled"

// FrameWriter writes whole frames to w; safe for concurrent use.
type FrameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	hdr [5]byte
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame of stream with payload p (empty allowed).
func (f *FrameWriter) WriteFrame(stream byte, p []byte) error {
	if len(p) > MaxFramePayload {
		return fmt.Errorf("exec stream: frame of %d bytes exceeds %d", len(p), MaxFramePayload)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hdr[0] = stream
	binary.BigEndian.PutUint32(f.hdr[1:], uint32(len(p)))
	if _, err := f.w.Write(f.hdr[:]); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	_, err := f.w.Write(p)
	return err
}

// Stream returns an io.Writer whose every Write becomes frames of stream.
func (f *FrameWriter) Stream(stream byte) io.Writer { return streamWriter{f, stream} }

type streamWriter struct {
	f      *FrameWriter
	stream byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), 32<<10)]
		if err := s.f.WriteFrame(s.stream, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// ReadFrame reads one frame from r into buf (grown as needed) and returns
// its stream and payload, which is valid until the next call with buf.
func ReadFrame(r io.Reader, buf *[]byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFramePayload {
		return 0, nil, fmt.Errorf("exec stream: frame of %d bytes exceeds %d", n, MaxFramePayload)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// WindowSize is a terminal size (the payload of StreamResize).
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}
