package secretinject

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Where is a set of locations in a request a value may be substituted in.
type Where uint8

const (
	Headers   Where = 1 << iota // any header value (Authorization: Bearer, X-Api-Key, Cookie…)
	BasicAuth                   // the user or password of Authorization: Basic
	Query                       // URL query keys and values (decoded, re-encoded)
	Body                        // the request body, bytes as sent

	// DefaultWhere applies when a Secret lists no substituteIn.
	DefaultWhere = Headers | BasicAuth
)

var whereNames = []struct {
	w    Where
	name string // as in apis/v1alpha1 (SubstituteHeaders…)
}{{Headers, "headers"}, {BasicAuth, "basicAuth"}, {Query, "query"}, {Body, "body"}}

// ParseWhere turns a Secret's substituteIn into a Where; empty means
// DefaultWhere. Unknown names are an error (validation should catch them
// first; this keeps the proxy from guessing).
func ParseWhere(names []string) (Where, error) {
	if len(names) == 0 {
		return DefaultWhere, nil
	}
	var w Where
next:
	for _, n := range names {
		for _, wn := range whereNames {
			if strings.EqualFold(n, wn.name) {
				w |= wn.w
				continue next
			}
		}
		return 0, fmt.Errorf("substituteIn: unknown location %q", n)
	}
	return w, nil
}

func (w Where) String() string {
	var parts []string
	for _, wn := range whereNames {
		if w&wn.w != 0 {
			parts = append(parts, wn.name)
		}
	}
	if len(parts) == 0 {
		return "nowhere"
	}
	return strings.Join(parts, "|")
}

// Binding is one placeholder a sandbox sees and what stands behind it.
// Value is held in memory only; Binding's String, GoString, Format,
// MarshalJSON and LogValue all leave it out, so printing or logging a
// Binding (or a Set) by mistake cannot reveal it.
type Binding struct {
	Placeholder string
	Value       []byte
	Secret      string // namespace/name
	Key         string
	// AllowedHosts are exact names or "*.suffix" (subdomains of suffix,
	// not suffix itself), as netpolicy matches domains. Case and a
	// trailing dot do not matter.
	AllowedHosts []string
	In           Where // zero means DefaultWhere
}

const redacted = "<redacted>"

func (b Binding) String() string {
	return fmt.Sprintf("{Placeholder:%s Secret:%s Key:%s AllowedHosts:%v In:%v Value:%s}",
		b.Placeholder, b.Secret, b.Key, b.AllowedHosts, b.In, redacted)
}

// GoString is what %#v prints.
func (b Binding) GoString() string { return "secretinject.Binding" + b.String() }

// Format makes every verb (%v, %+v, %#v, %s, %x, %q…) print the redacted form.
func (b Binding) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, b.GoString())
		return
	}
	fmt.Fprint(f, b.String())
}

// MarshalJSON leaves the value out.
func (b Binding) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"placeholder": b.Placeholder, "secret": b.Secret, "key": b.Key,
		"allowedHosts": b.AllowedHosts, "in": b.In.String(), "value": redacted,
	})
}

// LogValue keeps slog from printing the value.
func (b Binding) LogValue() slog.Value { return slog.StringValue(b.String()) }

// Set is the compiled substitutions of one sandbox. It never changes once
// built: rotation builds a new Set and swaps it in (see Sets), so a request
// in flight sees one consistent version. Safe for concurrent use.
//
// Everything lives behind one pointer: fmt prints a nested pointer as an
// address, so even %v of a Set value (not *Set) or of a struct that holds
// one in an unexported field shows no value.
type Set struct{ d *setData }

type setData struct {
	bindings []*compiledBinding
	byPH     map[string]*compiledBinding // placeholder -> binding
}

type compiledBinding struct {
	Binding
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
	needles  needles
}

// NewSet compiles bindings. Values are copied, so the caller may wipe its
// own. Bindings with a malformed placeholder are an error; two bindings
// with the same placeholder are too (a placeholder names one key).
func NewSet(bs []Binding) (*Set, error) {
	s := &Set{d: &setData{byPH: make(map[string]*compiledBinding, len(bs))}}
	for _, b := range bs {
		if !IsPlaceholder(b.Placeholder) {
			return nil, fmt.Errorf("binding %s/%s: %q is not a placeholder", b.Secret, b.Key, b.Placeholder)
		}
		if _, dup := s.d.byPH[b.Placeholder]; dup {
			return nil, fmt.Errorf("binding %s/%s: placeholder bound twice", b.Secret, b.Key)
		}
		if b.In == 0 {
			b.In = DefaultWhere
		}
		b.Value = append([]byte(nil), b.Value...)
		b.AllowedHosts = append([]string(nil), b.AllowedHosts...)
		cb := &compiledBinding{Binding: b, exact: map[string]bool{}, needles: makeNeedles(b.Placeholder)}
		for _, h := range b.AllowedHosts {
			h = normHost(h)
			if rest, ok := strings.CutPrefix(h, "*."); ok && rest != "" {
				cb.suffixes = append(cb.suffixes, "."+rest)
			} else if h != "" {
				cb.exact[h] = true
			}
		}
		s.d.bindings = append(s.d.bindings, cb)
		s.d.byPH[b.Placeholder] = cb
	}
	return s, nil
}

// allows reports whether b may be sent to host (already normalised).
func (b *compiledBinding) allows(host string) bool {
	if host == "" {
		return false
	}
	if b.exact[host] {
		return true
	}
	for _, s := range b.suffixes {
		if len(host) > len(s) && strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// permits: b's plain placeholder may be substituted at loc for host.
func (b *compiledBinding) permits(host string, loc Where) bool {
	return loc != 0 && b.In&loc != 0 && b.allows(host)
}

// Len is the number of bindings.
func (s *Set) Len() int {
	if s == nil || s.d == nil {
		return 0
	}
	return len(s.d.bindings)
}

// NeedsIntercept reports whether some binding may be sent to host, that is
// whether the proxy must terminate TLS to host (all else is passthrough).
func (s *Set) NeedsIntercept(host string) bool {
	if s.Len() == 0 {
		return false
	}
	host = normHost(host)
	for _, b := range s.d.bindings {
		if b.allows(host) {
			return true
		}
	}
	return false
}

func (s *Set) String() string {
	if s.Len() == 0 {
		return "secretinject.Set[]"
	}
	var b strings.Builder
	b.WriteString("secretinject.Set[")
	for i, cb := range s.d.bindings {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(cb.Binding.String())
	}
	b.WriteString("]")
	return b.String()
}

// GoString, Format, MarshalJSON and LogValue redact as Binding's do.
func (s *Set) GoString() string                        { return s.String() }
func (s *Set) Format(f fmt.State, _ rune)              { fmt.Fprint(f, s.String()) }
func (s *Set) MarshalJSON() ([]byte, error)            { return json.Marshal(s.String()) }
func (s *Set) LogValue() slog.Value                    { return slog.StringValue(s.String()) }
func (cb *compiledBinding) Format(f fmt.State, _ rune) { fmt.Fprint(f, cb.Binding.String()) }

// Sets holds the current Set of each sandbox, by sandbox ID: the reconciler
// Puts a fresh Set whenever a referenced Secret changes (rotation is live,
// the placeholder stays), the proxy Gets one per request. Safe for
// concurrent use.
type Sets struct{ m sync.Map }

func (ss *Sets) Put(sandbox string, s *Set) {
	if s.Len() == 0 {
		ss.m.Delete(sandbox)
		return
	}
	ss.m.Store(sandbox, s)
}

// Get returns sandbox's Set, or nil (nil is a valid, empty Set).
func (ss *Sets) Get(sandbox string) *Set {
	v, _ := ss.m.Load(sandbox)
	s, _ := v.(*Set)
	return s
}

func (ss *Sets) Delete(sandbox string) { ss.m.Delete(sandbox) }
