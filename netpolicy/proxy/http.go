package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"msb.dev/msb/netpolicy"
)

// relayHTTP carries a plain-HTTP connection whose first request (head
// parsed, length n, still in x.cr) was admitted.
//
// Design: every request on the connection is parsed, so every Host is seen.
// Requests are relayed one at a time: head and body upstream, then the
// response (with any 1xx before it) back, then the next request. A
// pipelining client just waits for its later requests to be read; nothing
// is reordered and the bytes forwarded are exactly the bytes received. A
// request naming the host the connection was admitted for (or another host
// already admitted on it) rides on that admission, as a TLS connection
// does; a request naming a new host is decided afresh and recorded, and if
// refused gets a 403 naming the policy, after which the connection closes.
// Riding on an admission lasts only as long as the rules it was decided
// under: once the sandbox's rules generation moves on (a policy removed or
// narrowed), every admitted host is forgotten and the next request is
// decided again under the new rules — a host admitted before is re-decided
// as of its admission (its DNS pin is not required to be still alive, see
// Rechecker), a new one as any new host is. While a response or a tunnel
// is in flight, the rules watcher (watch.go) does the same for the host in
// flight and cuts the connection if it is refused.
// Because responses are complete before the next request is read, the 403
// never interleaves with an upstream response. The body of a request is
// copied concurrently with its response so that Expect: 100-continue and
// early responses work. After a 101 to an Upgrade request (WebSocket) or a
// 2xx to CONNECT, the connection becomes an opaque tunnel — only then:
// switching on the request alone would let a client smuggle a second
// request past the check when the upstream declines the upgrade.
//
// When the sandbox has Secrets, every head is searched for placeholders
// before it is forwarded and every body is relayed through a guard (a
// chunked one re-framed): plain HTTP never carries a value, so any
// placeholder is a leak (leak.go). Without Secrets bodies are copied
// verbatim, spliced between the sockets.
func (x *conn) relayHTTP(h reqHead, n int, gen uint64, at time.Time) {
	ur := bufio.NewReaderSize(x.up, maxHead)
	// admitted: the hosts admitted on this connection, each with when
	// and under which rules generation. A request rides on an admission
	// only under the same generation.
	admitted := map[string]admission{h.name: {at, gen}}
	for {
		b, _ := x.cr.Peek(n)
		// Fetched per request: a rotated or new Secret applies at once.
		set := x.p.secrets(x.sb.ID)
		if set.Len() > 0 {
			// A small body is searched with its head, before anything
			// is sent: then the upstream gets not even the head.
			if m, ok := wholeRequest(h, n); ok {
				if b, _ = x.cr.Peek(m); len(b) < m {
					return
				}
			}
			if l := leakInPlainHead(set, b); l != nil {
				x.blocked(l, h.name)
				x.refuseHTTP(403, leakReason(l))
				return
			}
			b = b[:n]
		}
		if _, err := x.up.Write(b); err != nil {
			return
		}
		x.cr.Discard(n)
		var body chan error
		if h.chunked || h.length > 0 {
			body = make(chan error, 1)
			go func(h reqHead) {
				if set.Len() > 0 {
					body <- x.guardedBody(h, set)
				} else if h.chunked {
					body <- copyChunked(x.up, x.cr, x.c)
				} else {
					body <- copyN(x.up, x.cr, x.c, h.length)
				}
			}(h)
		}
		tunnel, closeAfter, err := x.relayResponse(ur, h)
		if body != nil {
			if err != nil || tunnel || closeAfter {
				// The response is over (or failed) and the connection
				// ends: don't wait for the rest of an upload.
				x.up.Close()
				x.c.SetReadDeadline(time.Now().Add(time.Second))
			}
			if berr := <-body; berr != nil && err == nil {
				err = berr
			}
		}
		if err != nil {
			return
		}
		if tunnel {
			if flush(x.c, ur) == nil && flush(x.up, x.cr) == nil {
				pipe(x.c, x.up)
			}
			return
		}
		if closeAfter || h.close {
			x.lingerClose()
			return
		}
		x.idle()
		if h, n, err = readRequest(x.cr); err != nil {
			if err != io.EOF {
				x.record(errDecision(err))
				x.refuseHTTP(httpStatus(err), err.Error())
			}
			return
		}
		gen = x.generation() // before deciding: see watch.go
		a, ok := admitted[h.name]
		if !ok || a.gen != gen {
			var d netpolicy.Decision
			if ok {
				// Admitted under older rules: decided again under
				// the current ones, as of its admission.
				d = x.reask(h.name, a.at)
				if !d.Allowed {
					d.Reason = "policy changed: " + d.Reason
				}
			} else {
				d = x.ask(h.name)
				a.at = admittedAt(d)
			}
			x.record(d)
			if !d.Allowed {
				x.refuseHTTP(403, "policy refuses "+quoteName(h.name)+": "+d.Reason)
				return
			}
			a.gen = gen
			if ok || len(admitted) < 64 {
				admitted[h.name] = a
			}
		}
		x.arm(gen, h.name, a.at)
	}
}

// admission is one host admitted on a plain-HTTP connection.
type admission struct {
	at  time.Time // when it was first admitted (for Rechecker)
	gen uint64    // the rules generation it was last decided under
}

// relayResponse copies the response to h (and any 1xx before it) from the
// upstream to the sandbox. tunnel: the connection switched protocols;
// closeAfter: the response ends the connection.
func (x *conn) relayResponse(ur *bufio.Reader, h reqHead) (tunnel, closeAfter bool, err error) {
	for {
		rh, n, err := readResponse(ur)
		if err != nil {
			return false, false, err
		}
		b, _ := ur.Peek(n)
		if _, err := x.c.Write(b); err != nil {
			return false, false, err
		}
		ur.Discard(n)
		switch {
		case rh.status == 101:
			if !h.upgrade {
				return false, false, errors.New("101 without an Upgrade request")
			}
			return true, false, nil
		case h.method == "CONNECT" && rh.status/100 == 2:
			return true, false, nil
		case rh.status/100 == 1:
			continue // interim response; the final one follows
		case h.method == "HEAD" || rh.status == 204 || rh.status == 304:
			return false, rh.close, nil
		case rh.chunked:
			return false, rh.close, copyChunked(x.c, ur, x.up)
		case rh.length >= 0:
			return false, rh.close, copyN(x.c, ur, x.up, rh.length)
		default: // delimited by the upstream closing
			if err := flush(x.c, ur); err != nil {
				return false, false, err
			}
			_, err := io.Copy(x.c, x.up)
			return false, true, err
		}
	}
}

// readRequest reads the next request head from br without consuming it.
// io.EOF: the connection ended (closed by the client, or by the idle
// watchdog); other errors are malformed requests.
func readRequest(br *bufio.Reader) (reqHead, int, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if len(b) > 0 {
			if ok, err := looksLikeHTTP(b); err == nil && !ok {
				return reqHead{}, 0, errBadHTTP
			}
			if h, n, err := parseRequestHead(b); err != errShort {
				return h, n, err
			}
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return reqHead{}, 0, io.EOF
		}
	}
}

func readResponse(br *bufio.Reader) (respHead, int, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if len(b) > 0 {
			if h, n, err := parseResponseHead(b); err != errShort {
				return h, n, err
			}
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return respHead{}, 0, err
		}
	}
}

// copyN copies n bytes: first what br holds, then straight from raw (br's
// underlying conn), which lets io.Copy splice between the two sockets.
func copyN(dst io.Writer, br *bufio.Reader, raw io.Reader, n int64) error {
	if k := min(int64(br.Buffered()), n); k > 0 {
		b, _ := br.Peek(int(k))
		if _, err := dst.Write(b); err != nil {
			return err
		}
		br.Discard(int(k))
		n -= k
	}
	if n == 0 {
		return nil
	}
	m, err := io.Copy(dst, io.LimitReader(raw, n))
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// copyChunked copies one chunked body (RFC 9112 section 7.1) verbatim,
// following its framing so the proxy knows where the next message starts.
func copyChunked(dst io.Writer, br *bufio.Reader, raw io.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok {
			return errors.New("malformed chunk size")
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
		if size == 0 {
			for { // trailer fields, then the final CRLF
				line, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(line) < 2 || line[len(line)-2] != '\r' {
					return errors.New("malformed chunked trailer")
				}
				if _, err := dst.Write(line); err != nil {
					return err
				}
				if len(line) == 2 {
					return nil
				}
			}
		}
		if err := copyN(dst, br, raw, size); err != nil {
			return err
		}
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if string(line) != "\r\n" {
			return errors.New("malformed chunk end")
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
	}
}

// chunkSize parses "1a2b[;ext]\r\n".
func chunkSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, false
	}
	line = line[:len(line)-2]
	var n int64
	i := 0
	for ; i < len(line) && i < 16; i++ {
		c := line[i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			goto rest
		}
		n = n<<4 | int64(v)
	}
rest:
	if i == 0 || i > 15 {
		return 0, false
	}
	for _, c := range line[i:] {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return 0, false
		}
	}
	if r := line[i:]; len(r) > 0 && r[0] != ';' && r[0] != ' ' && r[0] != '\t' {
		return 0, false
	}
	return n, true
}

// refuseHTTP answers the current request with status and closes.
func (x *conn) refuseHTTP(status int, msg string) {
	text := map[int]string{400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}[status]
	body := "msb egress proxy: " + msg + "\n"
	x.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(x.c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", status, text, len(body), body)
	x.lingerClose()
}

// lingerClose half-closes the sandbox side and reads (briefly) what the
// client still sends, so that unread pipelined bytes don't make the kernel
// answer with a RST that destroys the response before it is read.
func (x *conn) lingerClose() {
	closeWrite(x.c)
	x.c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, x.c, 1<<20)
}
