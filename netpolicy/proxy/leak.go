package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"

	"msb.dev/msb/netpolicy"
	"msb.dev/msb/secretinject"
)

// Leak blocking where nothing is substituted. A value never goes out in
// clear, so on plain HTTP any placeholder, in any form, is a leak: the
// request head is searched before it is forwarded, and the body is relayed
// through a guard that fails before any byte of a placeholder has passed.
// TLS that is not intercepted is opaque and is not searched.

// secrets is the sandbox's current Set (nil: none).
func (p *Proxy) secrets(id string) *secretinject.Set {
	if p.o.Secrets == nil {
		return nil
	}
	return p.o.Secrets(id)
}

// leakReason is what the decision log says: Secret, key and location,
// never the value.
func leakReason(l *secretinject.Leak) string {
	return "secret leak blocked: " + l.Secret + "/" + l.Key + " in " + l.Where
}

func decisionRefused(name, reason string) netpolicy.Decision {
	return netpolicy.Decision{Name: name, Reason: reason}
}

// blocked records a blocked leak on the connection to name and tells
// OnLeak. Several h2 streams may call it at once.
func (x *conn) blocked(l *secretinject.Leak, name string) {
	if l.Host == "" {
		l.Host = name
	}
	x.record(decisionRefused(name, leakReason(l)))
	if f := x.p.o.OnLeak; f != nil {
		f(x.sb, l, x.dst)
	}
}

// wholeRequest says whether a request (head of n bytes) with a body of
// known length fits the peek buffer whole, so it can be searched before
// anything is forwarded, and its length. Not with Expect: 100-continue:
// that body comes only after the upstream's 100.
func wholeRequest(h reqHead, n int) (int, bool) {
	if h.chunked || h.length <= 0 || h.expectContinue || int64(n)+h.length > maxHead {
		return 0, false
	}
	return n + int(h.length), true
}

// leakInPlainHead searches a plain-HTTP request head (with its body when
// wholeRequest).
func leakInPlainHead(set *secretinject.Set, head []byte) *secretinject.Leak {
	l := set.LeakInBytes(head)
	if l != nil {
		l.Where = strings.Replace(l.Where, "plain connection", "plain HTTP request", 1)
	}
	return l
}

// guardedBody relays the body of plain-HTTP request h through set's guard.
// On a leak, the upstream connection is reset (it has the head and part
// of the body, never the placeholder; a RST makes sure it never takes the
// request as complete) and the sandbox's is closed.
func (x *conn) guardedBody(h reqHead, set *secretinject.Set) error {
	var err error
	if h.chunked {
		err = copyChunkedGuarded(x.up, x.cr, set)
	} else {
		err = copyGuarded(x.up, set.GuardStream(io.LimitReader(x.cr, h.length), ""), h.length)
	}
	var l *secretinject.Leak
	if errors.As(err, &l) {
		if tc, ok := x.up.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		x.up.Close()
		x.c.Close()
		l.Where = strings.Replace(l.Where, "stream", "plain HTTP body", 1)
		x.blocked(l, h.name)
	}
	return err
}

// copyGuarded copies exactly n bytes of a guarded body.
func copyGuarded(dst io.Writer, src io.Reader, n int64) error {
	m, err := io.CopyBuffer(dst, src, make([]byte, 32<<10))
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// copyChunkedGuarded relays a chunked body decoded, guarded and chunked
// again: a chunk boundary (the framing the upstream strips) could
// otherwise split a placeholder so that no window of raw bytes holds it.
// Chunk sizes change and extensions are dropped; data and trailers do
// not. Trailers are searched too.
func copyChunkedGuarded(dst io.Writer, br *bufio.Reader, set *secretinject.Set) error {
	dec := &chunkDecoder{br: br}
	g := set.GuardStream(dec, "")
	buf := make([]byte, 32<<10)
	frame := make([]byte, 0, len(buf)+16)
	for {
		n, err := g.Read(buf)
		if n > 0 {
			frame = strconv.AppendInt(frame[:0], int64(n), 16)
			frame = append(frame, "\r\n"...)
			frame = append(frame, buf[:n]...)
			frame = append(frame, "\r\n"...)
			if _, werr := dst.Write(frame); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if l := set.LeakInBytes(dec.trailer); l != nil {
		l.Where = strings.Replace(l.Where, "plain connection", "plain HTTP trailer", 1)
		return l
	}
	frame = append(append(append(frame[:0], "0\r\n"...), dec.trailer...), "\r\n"...)
	_, err := dst.Write(frame)
	return err
}

// chunkDecoder reads the data of one chunked body (RFC 9112 section 7.1)
// from br, keeping the trailer lines; it stops right after the body.
type chunkDecoder struct {
	br      *bufio.Reader
	left    int64 // data left in the current chunk
	inChunk bool
	done    bool
	trailer []byte // trailer field lines, each with its CRLF
}

func (d *chunkDecoder) Read(p []byte) (int, error) {
	for !d.done && d.left == 0 {
		if d.inChunk { // the CRLF after a chunk's data
			line, err := d.br.ReadSlice('\n')
			if err != nil {
				return 0, noEOF(err)
			}
			if string(line) != "\r\n" {
				return 0, errors.New("malformed chunk end")
			}
			d.inChunk = false
		}
		line, err := d.br.ReadSlice('\n')
		if err != nil {
			return 0, noEOF(err)
		}
		size, ok := chunkSize(line)
		if !ok {
			return 0, errors.New("malformed chunk size")
		}
		if size == 0 {
			if err := d.readTrailer(); err != nil {
				return 0, err
			}
			d.done = true
			break
		}
		d.left, d.inChunk = size, true
	}
	if d.done {
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.br.Read(p)
	d.left -= int64(n)
	if err != nil && n == 0 {
		return 0, noEOF(err)
	}
	return n, nil
}

func (d *chunkDecoder) readTrailer() error {
	for {
		line, err := d.br.ReadSlice('\n')
		if err != nil {
			return noEOF(err)
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return errors.New("malformed chunked trailer")
		}
		if len(line) == 2 {
			return nil
		}
		if len(d.trailer)+len(line) > maxHead {
			return errHeadTooLarge
		}
		d.trailer = append(d.trailer, line...)
	}
}

// noEOF: the body ending before its last chunk is an error, not its end.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
