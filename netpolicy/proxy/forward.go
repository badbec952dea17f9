package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"msb.dev/msb/secretinject"
)

// hopByHop are the fields that belong to one connection, not to the
// message (RFC 9110 section 7.6.1): never forwarded either way. "Te" is
// put back as "trailers" when the client asked for trailers.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// ServeHTTP forwards one request of an intercepted connection: the Set is
// fetched now (rotation applies to the next request), the request is
// rewritten (placeholders replaced where allowed; any other placeholder,
// or a Host that is not the SNI, refuses it before a byte goes upstream),
// sent on the connection's one upstream, and the response streamed back
// with its trailers.
func (ic *intercepted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !ic.begin() {
		panic(http.ErrAbortHandler)
	}
	defer ic.handlers.Done()
	if r.Method == http.MethodConnect || r.Header.Get("Upgrade") != "" {
		// A tunnel inside the intercepted connection would carry
		// bytes no Rewrite could see.
		ic.fail(w, r, http.StatusNotImplemented, "protocol upgrades and CONNECT are not supported on a connection msb intercepts for secret substitution")
		return
	}
	var set *secretinject.Set
	if f := ic.x.p.o.Secrets; f != nil {
		set = f(ic.x.sb.ID)
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = "https", r.Host, r.Host
	out.Trailer = r.Trailer // the server fills r.Trailer as the body ends
	out.Close = false
	wantTrailers := strings.Contains(strings.ToLower(strings.Join(r.Header.Values("Te"), ",")), "trailers")
	removeHopByHop(out.Header)
	if wantTrailers {
		out.Header.Set("Te", "trailers")
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // don't let the Transport add Go's
	}

	if err := set.Rewrite(out, ic.sni); err != nil {
		var leak *secretinject.Leak
		if errors.As(err, &leak) || errors.Is(err, secretinject.ErrHostMismatch) {
			ic.refuse(w, r, out, set, err)
			return
		}
		ic.fail(w, r, http.StatusBadRequest, err.Error()) // never holds a value
		return
	}
	var watch *leakWatch
	if out.Body != nil && out.Body != http.NoBody {
		watch = &leakWatch{ReadCloser: out.Body, on: func(l *secretinject.Leak) {
			// A placeholder further down a streamed body: the head
			// has gone, no byte of the placeholder has. Reset both
			// sides so the upstream never sees a complete request.
			ic.x.blocked(l, ic.sni)
			ic.kill()
		}}
		out.Body = watch
	}
	resp, err := ic.up.RoundTrip(out)
	if err != nil {
		if watch.fired() {
			panic(http.ErrAbortHandler)
		}
		ic.fail(w, r, http.StatusBadGateway, "upstream: "+err.Error())
		return
	}
	defer resp.Body.Close()
	ic.respond(w, r, resp)
	if watch.fired() {
		panic(http.ErrAbortHandler)
	}
}

// respond copies resp to w: header, body (flushed as it comes when its
// length is unknown, so streams stream), trailers.
func (ic *intercepted) respond(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	removeHopByHop(h)
	if _, ok := resp.Header["Content-Type"]; !ok {
		h["Content-Type"] = nil // no sniffing: send what the upstream sent
	}
	if len(resp.Trailer) > 0 {
		// HTTP/1.1 carries trailers only in a chunked body (an h2
		// upstream may send both a length and trailers).
		h.Del("Content-Length")
	} else if resp.ContentLength >= 0 && h.Get("Content-Length") == "" {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	announced := make(map[string]bool, len(resp.Trailer))
	for k := range resp.Trailer {
		announced[k] = true
		h.Add("Trailer", k)
	}
	if resp.Close && r.ProtoMajor == 1 {
		h.Set("Connection", "close") // the upstream will not take another
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				panic(http.ErrAbortHandler)
			}
			if resp.ContentLength < 0 {
				rc.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The upstream broke off: the sandbox must see a broken
			// response, not a short one that looks complete.
			panic(http.ErrAbortHandler)
		}
	}
	for k, v := range resp.Trailer { // known only now that the body ended
		if announced[k] {
			h[k] = v
		} else {
			h[http.TrailerPrefix+k] = v
		}
	}
}

// refuse handles a request Rewrite refused: nothing has gone upstream.
// It records the decision, tells OnLeak, answers 403 and closes the
// connection.
func (ic *intercepted) refuse(w http.ResponseWriter, r, out *http.Request, set *secretinject.Set, err error) {
	var leak *secretinject.Leak
	if !errors.As(err, &leak) {
		// Host differs from the SNI. Say which placeholder was on its
		// way to that Host, if one was, so the Event names it.
		leak = set.Leak(out, r.Host)
	}
	if leak != nil {
		ic.x.blocked(leak, ic.sni)
	} else {
		ic.x.record(decisionRefused(ic.sni, fmt.Sprintf("Host %q does not match SNI %q on a connection intercepted for secret substitution", r.Host, ic.sni)))
	}
	ic.fail(w, r, http.StatusForbidden, "request refused: "+reasonOf(leak, err))
}

func reasonOf(leak *secretinject.Leak, err error) string {
	if leak != nil {
		return leakReason(leak)
	}
	return err.Error()
}

// fail answers status and ends the connection (h1: Connection: close,
// after which net/http closes it gracefully; h2: the connection is closed
// once the answer is flushed).
func (ic *intercepted) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if r.ProtoMajor == 1 {
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	io.WriteString(w, "msb egress proxy: "+msg+"\n")
	if r.ProtoMajor != 1 {
		http.NewResponseController(w).Flush()
		ic.kill()
	}
}

// leakWatch notices a *Leak coming out of a streamed request body (the
// Transport reads it while sending) as soon as it happens.
type leakWatch struct {
	io.ReadCloser
	on   func(*secretinject.Leak)
	once sync.Once
	hit  bool
	mu   sync.Mutex
}

func (lw *leakWatch) Read(p []byte) (int, error) {
	n, err := lw.ReadCloser.Read(p)
	var leak *secretinject.Leak
	if err != nil && errors.As(err, &leak) {
		lw.once.Do(func() {
			lw.mu.Lock()
			lw.hit = true
			lw.mu.Unlock()
			lw.on(leak)
		})
	}
	return n, err
}

func (lw *leakWatch) fired() bool {
	if lw == nil {
		return false
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.hit
}
