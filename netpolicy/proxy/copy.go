package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const (
	protoOther = iota // no name: decided by IP rules
	protoTLS
	protoHTTP
)

// sniffed is what the first bytes of a connection say.
type sniffed struct {
	proto   int
	name    string
	head    reqHead // protoHTTP: the first request
	headLen int
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var (
	errNothingSent = errors.New("sent nothing within PeekTimeout")
	errClosedEarly = errors.New("closed before sending anything")
)

// sniff peeks (without consuming) at the first bytes in br until they tell
// a ClientHello, an HTTP request head or something else apart. The caller
// bounds the wait with a read deadline; the buffer size bounds the bytes.
func sniff(br *bufio.Reader) (sniffed, error) {
	var s sniffed
	for {
		if b, _ := br.Peek(br.Buffered()); len(b) > 0 {
			if done, err := s.classify(b); done {
				return s, err
			}
		}
		if br.Buffered() >= br.Size() {
			if s.proto == protoTLS {
				return s, errHelloTooLong
			}
			return s, errHeadTooLarge
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			timeout := errors.Is(err, os.ErrDeadlineExceeded)
			switch {
			case br.Buffered() == 0 && timeout:
				return s, errNothingSent
			case br.Buffered() == 0:
				return s, errClosedEarly
			case s.proto == protoTLS:
				return s, errors.New("incomplete ClientHello")
			case s.proto == protoHTTP:
				return s, errors.New("incomplete HTTP request head")
			}
			return s, errors.New("incomplete first bytes")
		}
	}
}

// classify decides what b is, if it can yet.
func (s *sniffed) classify(b []byte) (bool, error) {
	if b[0] == 0x16 {
		s.proto = protoTLS
		name, err := parseClientHello(b)
		switch {
		case err == errShort:
			return false, nil
		case err == errNotTLS:
			s.proto = protoOther
			return true, nil
		case err == errBadName:
			return true, errors.New("invalid SNI")
		}
		s.name = name
		return true, err
	}
	// HTTP/2 with prior knowledge (h2c, plaintext gRPC) has no Host
	// before its binary frames: no name, decided by IP rules.
	if k := min(len(b), len(h2Preface)); string(b[:k]) == h2Preface[:k] {
		s.proto = protoOther
		return k == len(h2Preface), nil
	}
	isHTTP, err := looksLikeHTTP(b)
	if err == errShort {
		return false, nil
	}
	if !isHTTP {
		s.proto = protoOther
		return true, nil
	}
	s.proto = protoHTTP
	h, n, err := parseRequestHead(b)
	if err == errShort {
		return false, nil
	}
	s.name, s.head, s.headLen = h.name, h, n
	return true, err
}

// flush writes what br holds to dst, so the rest can be copied from br's
// underlying connection directly.
func flush(dst io.Writer, br *bufio.Reader) error {
	if br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	_, err := dst.Write(b)
	br.Discard(len(b))
	return err
}

// pipe copies a→b and b→a until both directions end, then returns; the
// caller closes both. An EOF is passed on as a half-close (CloseWrite), so
// protocols that finish sending before they finish receiving keep working;
// an error in either direction tears both down. With two *net.TCPConn,
// io.Copy uses splice(2): the bytes never enter user space.
func pipe(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	<-done
}

func copyHalf(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	closeWrite(dst)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// watchIdle calls fire once c has carried no data in either direction for
// idle. It asks the kernel (TCP_INFO) when data last moved instead of
// wrapping every read, so copying can stay on splice(2) with no per-read
// bookkeeping; the timer only wakes once per idle period. A conn whose
// TCP_INFO cannot be read counts as idle. stop must be called when the
// connection ends.
func (p *Proxy) watchIdle(c net.Conn, idle time.Duration, fire func()) (stop func()) {
	var (
		mu      sync.Mutex
		t       *time.Timer
		stopped bool
	)
	check := func() {
		quiet, ok := tcpQuiet(c)
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if ok && quiet < idle {
			t.Reset(idle - quiet)
			return
		}
		stopped = true
		fire()
	}
	mu.Lock()
	t = time.AfterFunc(idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
