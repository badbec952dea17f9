package v1alpha1

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Document is one object read from a manifest, with where it came from.
type Document struct {
	Object Object
	Source string // file name, "-" for stdin
	Line   int    // line where the object starts

	// lines maps field paths ("spec.env[1].name") to the line of their key,
	// so that errors found later (validation) can point into the file.
	lines map[string]int
}

// LineOf returns the line of the field at path (or of its nearest enclosing
// field that was written in the manifest), or the document's line.
func (d Document) LineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return d.Line
}

// Validate validates the object and returns an ErrorList of *FieldError that
// carry the document's source and the line of each offending field, or nil.
func (d Document) Validate() error {
	errs := Validate(d.Object)
	for _, err := range errs {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Source = d.Source
			if fe.Line == 0 {
				fe.Line = d.LineOf(fe.Path)
			}
		}
	}
	return errs.Err()
}

// FieldError is one problem in a manifest: where it is and what is wrong.
type FieldError struct {
	Source string // file name; empty when not decoded from a file
	Line   int    // 0 when unknown
	Path   string // field path, e.g. spec.env[1].valueFrom
	Msg    string
}

// Error formats the error as "file:line: path: msg", leaving out what is unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Source != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.Source, e.Line)
	case e.Source != "":
		b.WriteString(e.Source + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is a list of errors reported together, one per line.
type ErrorList []error

// Error joins the errors with newlines.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, err := range l {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.Is and errors.As look at every error in the list.
func (l ErrorList) Unwrap() []error { return l }

// Err returns nil for an empty list and the list otherwise, so callers do not
// return a non-nil error interface holding an empty list.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// appendErr adds err to l, flattening ErrorLists.
func appendErr(l ErrorList, err error) ErrorList {
	if err == nil {
		return l
	}
	var el ErrorList
	if errors.As(err, &el) {
		return append(l, el...)
	}
	return append(l, err)
}

// decodableKinds are the kinds a manifest may hold (Events are server-made).
var decodableKinds = []string{KindSandbox, KindNetworkPolicy, KindSecret}

// ignoredPaths are accepted in manifests and dropped: status and the
// metadata the server sets, so "get -o yaml" output can be applied again.
var ignoredPaths = map[string]bool{
	"status":                     true,
	"metadata.uid":               true,
	"metadata.resourceVersion":   true,
	"metadata.generation":        true,
	"metadata.creationTimestamp": true,
	"metadata.deletionTimestamp": true,
	"metadata.finalizers":        true,
}

// Decode reads the objects in data: multi-document YAML (separated by ---),
// or JSON (one object); either may be a List ({"kind": "List", "items": [...]}).
// Empty documents are skipped. Decoding is strict: unknown fields, duplicate
// keys, wrong types, unknown kinds and invalid objects (see Validate) are
// errors. source names data in errors ("-" for stdin).
//
// The error, when not nil, is an ErrorList of every problem found in every
// document, each a *FieldError with source, line and field path. The
// documents returned are those without errors. Objects are not defaulted.
func Decode(source string, data []byte) ([]Document, error) {
	if json.Valid(data) {
		data = jsonForYAML(data)
	}
	// Without aliases every node visited costs at least two bytes of input,
	// so this budget only stops alias expansion.
	d := &decoder{source: source, budget: 100000 + len(data)}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var root yaml.Node
		err := parseNext(dec, &root)
		if err == io.EOF {
			break
		}
		if err != nil {
			d.errs = append(d.errs, syntaxError(source, err))
			break // the parser cannot resynchronise after a syntax error
		}
		if len(root.Content) == 0 {
			continue
		}
		d.document(root.Content[0], true)
	}
	// Report in file order (validation walks fields in type order).
	slices.SortStableFunc(d.errs, func(a, b error) int { return cmp.Compare(errLine(a), errLine(b)) })
	return d.docs, d.errs.Err()
}

func errLine(err error) int {
	if fe, ok := err.(*FieldError); ok {
		return fe.Line
	}
	return 0
}

// parseNext reads the next YAML document, turning a parser panic into an error.
func parseNext(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	return dec.Decode(n)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(source string, err error) *FieldError {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Source: source, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &FieldError{Source: source, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// jsonForYAML rewrites valid JSON so the YAML parser reads it as JSON means
// it: every string literal is re-quoted with escapes YAML knows (JSON's "\/"
// and UTF-16 surrogate pairs are not YAML). Line breaks are kept, so line
// numbers stay right.
func jsonForYAML(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(data)/8)
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c != '"' {
			out = append(out, c)
			continue
		}
		j := i + 1
		for ; j < len(data) && data[j] != '"'; j++ {
			if data[j] == '\\' {
				j++
			}
		}
		var s string
		if err := json.Unmarshal(data[i:j+1], &s); err != nil {
			return data // cannot happen for valid JSON; let the YAML parser report
		}
		out = strconv.AppendQuote(out, s)
		i = j
	}
	return out
}

// decoder walks yaml.Node trees against Go types by reflection.
type decoder struct {
	source string
	docs   []Document
	errs   ErrorList
	budget int // nodes left to visit; bounds alias expansion ("billion laughs")

	// Per document.
	kind  string
	lines map[string]int
}

func (d *decoder) errorf(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Source: d.source, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// deref follows aliases and charges the visit budget; it returns nil when
// the budget is spent.
func (d *decoder) deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if !d.charge(1) || n == nil {
		return nil
	}
	return n
}

// charge takes n from the budget of nodes to decode, reporting (once) when
// it runs out; it is charged before allocating, so memory stays bounded too.
func (d *decoder) charge(n int) bool {
	if d.budget <= 0 {
		return false
	}
	if d.budget -= n; d.budget <= 0 {
		d.errorf(0, "", "document too large after expanding aliases")
		return false
	}
	return true
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// document decodes one object (or, when top is set, possibly a List of them).
func (d *decoder) document(n *yaml.Node, top bool) {
	if n = d.deref(n); n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "", "expected an object (a mapping with apiVersion, kind, metadata and spec), got %s", describeNode(n))
		return
	}
	before := len(d.errs)
	apiVersion, apiLine := d.topString(n, "apiVersion")
	kind, kindLine := d.topString(n, "kind")
	if kind == "List" {
		if !top {
			d.errorf(kindLine, "kind", "a List cannot hold another List")
			return
		}
		d.list(n, apiVersion, apiLine)
		return
	}
	known := false
	for _, k := range decodableKinds {
		known = known || k == kind
	}
	switch {
	case kind == "":
		d.errorf(max(kindLine, n.Line), "kind", "required; known kinds: %s", strings.Join(decodableKinds, ", "))
		return
	case !known:
		d.errorf(kindLine, "kind", "kind %q is not known; known kinds: %s", kind, strings.Join(decodableKinds, ", "))
		return
	}
	switch {
	case apiVersion == "":
		d.errorf(max(apiLine, n.Line), "apiVersion", "required; want %s", APIVersion)
	case apiVersion != APIVersion:
		d.errorf(apiLine, "apiVersion", "%q is not known; want %s", apiVersion, APIVersion)
	}
	info, err := LookupKind(kind)
	if err != nil {
		d.errorf(kindLine, "kind", "%v", err)
		return
	}
	obj := info.New()
	d.kind, d.lines = kind, map[string]int{}
	d.value(n, reflect.ValueOf(obj).Elem(), "", n.Line)
	structural := slices.Clone(d.errs[before:])
	doc := Document{Object: obj, Source: d.source, Line: n.Line, lines: d.lines}
	// Validate even a document with structural errors, to report everything
	// at once, but skip what those errors explain: a field that failed to
	// decode is empty, which validation would report again.
	var verrs ErrorList
	verrs = appendErr(verrs, doc.Validate())
	for _, err := range verrs {
		if fe, ok := err.(*FieldError); ok && !relatedToAny(fe.Path, fe.Msg, structural) {
			d.errs = append(d.errs, err)
		}
	}
	if len(d.errs) == before {
		d.docs = append(d.docs, doc)
	}
}

// relatedToAny reports whether the validation error (path, msg) is explained
// by one of the decoding errors errs: it is at, inside or around the same
// field, or a missing field next to an unknown one.
func relatedToAny(path, msg string, errs ErrorList) bool {
	for _, err := range errs {
		fe, ok := err.(*FieldError)
		if !ok {
			continue
		}
		if fe.Path == "" || isWithin(path, fe.Path) || isWithin(fe.Path, path) {
			return true
		}
		// A misspelt key ("nam") explains a missing sibling ("name: required").
		if strings.HasPrefix(fe.Msg, "unknown field") && strings.HasPrefix(msg, "required") && parentPath(fe.Path) == parentPath(path) {
			return true
		}
	}
	return false
}

// isWithin reports whether field path p is q or inside it.
func isWithin(p, q string) bool {
	return p == q || strings.HasPrefix(p, q) && (p[len(q)] == '.' || p[len(q)] == '[')
}

// topString returns the string value of key in mapping n and the line of the
// key (0 when absent). Type and duplicate errors are left to the full walk.
func (d *decoder) topString(n *yaml.Node, key string) (string, int) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == key {
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				return v.Value, k.Line
			}
			return "", k.Line
		}
	}
	return "", 0
}

// list decodes {"kind": "List", "items": [...]} as kubectl writes it.
func (d *decoder) list(n *yaml.Node, apiVersion string, apiLine int) {
	if apiLine != 0 && apiVersion != "v1" && apiVersion != APIVersion {
		d.errorf(apiLine, "apiVersion", "%q is not known for a List; want v1 or %s", apiVersion, APIVersion)
	}
	var items *yaml.Node
	d.mapping(n, "", func(key string) string { return key }, func(key, path string, line int, v *yaml.Node) {
		switch key {
		case "apiVersion", "kind", "metadata":
		case "items":
			if v = d.deref(v); v == nil || isNull(v) {
				return
			}
			if v.Kind != yaml.SequenceNode {
				d.errorf(line, path, "expected a list of objects, got %s", describeNode(v))
				return
			}
			items = v
		default:
			d.errorf(line, path, "unknown field")
		}
	})
	if items == nil {
		return
	}
	for _, item := range items.Content {
		d.document(item, false)
	}
}

// mapping calls each for every key of mapping n, reporting keys that are not
// scalars, merge keys and duplicates. child makes a key's field path.
func (d *decoder) mapping(n *yaml.Node, path string, child func(string) string, each func(key, path string, line int, v *yaml.Node)) {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.deref(n.Content[i]), n.Content[i+1]
		if k == nil {
			return
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "expected a string key, got %s", describeNode(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorf(k.Line, path, "merge keys (<<) are not supported; write the fields out")
			continue
		}
		p := child(k.Value)
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, p, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		each(k.Value, p, k.Line, v)
	}
}

var (
	timeType     = reflect.TypeOf(time.Time{})
	quantityType = reflect.TypeOf(Quantity(""))
	durationType = reflect.TypeOf(Duration(""))
)

// value decodes n into v (settable), reporting errors at line under path.
// Null leaves v at its zero value.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, line int) {
	if n = d.deref(n); n == nil || isNull(n) {
		return
	}
	t := v.Type()
	switch t {
	case timeType:
		if !d.scalar(n, path, line, "a time (RFC 3339)", "!!str", "!!timestamp") {
			return
		}
		tm, err := time.Parse(time.RFC3339, n.Value)
		if err != nil {
			d.errorf(line, path, "cannot use %q as time: want RFC 3339, e.g. 2026-12-01T00:00:00Z", n.Value)
			return
		}
		v.Set(reflect.ValueOf(tm))
		return
	case quantityType, durationType:
		// Kept as written: "cpus: 0.5" is the quantity "0.5". Validate parses.
		what := "a quantity"
		if t == durationType {
			what = "a duration"
		}
		if d.scalar(n, path, line, what, "!!str", "!!int", "!!float") {
			v.SetString(n.Value)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		d.value(n, p.Elem(), path, line)
		v.Set(p)
	case reflect.Struct:
		d.structValue(n, v, path, line)
	case reflect.Map:
		d.mapValue(n, v, path, line)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(line, path, "expected %s, got %s", describeType(t), describeNode(n))
			return
		}
		if !d.charge(len(n.Content)) {
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.value(item, s.Index(i), p, item.Line)
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(line, path, "expected a string, got %s", describeNode(n))
			return
		}
		if tag := n.ShortTag(); tag != "!!str" {
			if d.secretValue(path) {
				d.errorf(line, path, "expected a string, got %s (value not shown); quote the value", describeNode(n))
			} else {
				d.errorf(line, path, "cannot use %s (%s) as string; quote it: %q", n.Value, describeNode(n), n.Value)
			}
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !d.scalar(n, path, line, "an integer", "!!int") {
			return
		}
		i, err := strconv.ParseInt(n.Value, 10, t.Bits())
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				d.errorf(line, path, "cannot use %q as integer: out of range", n.Value)
			} else {
				d.errorf(line, path, "cannot use %q as integer: write it in decimal", n.Value)
			}
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		if !d.scalar(n, path, line, "a boolean", "!!bool") {
			return
		}
		switch strings.ToLower(n.Value) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.errorf(line, path, "cannot use %q as boolean: want true or false", n.Value)
		}
	default:
		d.errorf(line, path, "cannot decode into field of type %s", t)
	}
}

// scalar checks that n is a scalar with one of tags, reporting an error if not.
func (d *decoder) scalar(n *yaml.Node, path string, line int, what string, tags ...string) bool {
	if n.Kind != yaml.ScalarNode {
		d.errorf(line, path, "expected %s, got %s", what, describeNode(n))
		return false
	}
	tag := n.ShortTag()
	for _, t := range tags {
		if tag == t {
			return true
		}
	}
	switch {
	case d.secretValue(path):
		d.errorf(line, path, "expected %s, got %s", what, describeNode(n))
	case what == "an integer":
		d.errorf(line, path, "cannot use %q as integer", n.Value)
	case what == "a boolean":
		d.errorf(line, path, "cannot use %q as boolean: want true or false", n.Value)
	default:
		d.errorf(line, path, "cannot use %q as %s", n.Value, strings.TrimPrefix(strings.TrimPrefix(what, "an "), "a "))
	}
	return false
}

// secretValue reports whether path holds a secret value, which must never be
// echoed in an error.
func (d *decoder) secretValue(path string) bool {
	return d.kind == KindSecret && (strings.HasPrefix(path, "spec.stringData[") || strings.HasPrefix(path, "spec.data["))
}

func (d *decoder) structValue(n *yaml.Node, v reflect.Value, path string, line int) {
	if n.Kind != yaml.MappingNode {
		d.errorf(line, path, "expected a mapping, got %s", describeNode(n))
		return
	}
	fields := fieldsOf(v.Type())
	d.mapping(n, path, func(key string) string { return joinPath(path, key) }, func(key, p string, kline int, val *yaml.Node) {
		d.lines[p] = kline
		if ignoredPaths[p] {
			return
		}
		f, ok := fields.byName[key]
		if !ok {
			if hint, ok := fields.byLower[strings.ToLower(key)]; ok {
				d.errorf(kline, p, "unknown field (did you mean %q?)", hint)
			} else {
				d.errorf(kline, p, "unknown field")
			}
			return
		}
		d.value(val, v.FieldByIndex(f), p, kline)
	})
}

func (d *decoder) mapValue(n *yaml.Node, v reflect.Value, path string, line int) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errorf(line, path, "cannot decode into field of type %s", t)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(line, path, "expected a mapping, got %s", describeNode(n))
		return
	}
	if !d.charge(len(n.Content) / 2) {
		return
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	d.mapping(n, path, func(key string) string { return path + "[" + key + "]" }, func(key, p string, kline int, val *yaml.Node) {
		d.lines[p] = kline
		e := reflect.New(t.Elem()).Elem()
		d.value(val, e, p, kline)
		m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), e)
	})
	v.Set(m)
}

// structFields indexes a struct's fields by their JSON names, with inline
// (embedded) structs flattened.
type structFields struct {
	byName  map[string][]int
	byLower map[string]string // lower-case name -> name, for hints
}

var fieldCache sync.Map // reflect.Type -> *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{byName: map[string][]int{}, byLower: map[string]string{}}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, idx)
				continue
			}
			if name == "" {
				name = sf.Name
			}
			f.byName[name] = idx
			f.byLower[strings.ToLower(name)] = name
		}
	}
	walk(t, nil)
	actual, _ := fieldCache.LoadOrStore(t, f)
	return actual.(*structFields)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// parentPath strips the last element of a field path: "a.b[2]" -> "a.b",
// "a.b" -> "a", "a" -> "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// describeNode names what a node holds, for "expected X, got Y" messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	switch tag := n.ShortTag(); tag {
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "a timestamp"
	default:
		return "a value tagged " + tag
	}
}

// describeType names what a Go type expects, for "expected X" messages.
func describeType(t reflect.Type) string {
	switch t {
	case timeType:
		return "a time (RFC 3339)"
	case quantityType:
		return "a quantity"
	case durationType:
		return "a duration"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		e := describeType(t.Elem())
		e = strings.TrimPrefix(strings.TrimPrefix(e, "an "), "a ")
		switch {
		case strings.HasSuffix(e, ")"): // "time (RFC 3339)"
		case strings.HasSuffix(e, "y"):
			e = strings.TrimSuffix(e, "y") + "ies"
		default:
			e += "s"
		}
		return "a list of " + e
	default:
		return "a mapping"
	}
}

// manifestExts are the file extensions read from directories.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true}

// DecodeFiles decodes every path: a file, a directory ("*.yaml", "*.yml" and
// "*.json" files in name order; subdirectories only when recursive) or "-"
// for stdin. It returns the documents of all files and an ErrorList of every
// problem in every file; each error names its file.
func DecodeFiles(paths []string, recursive bool, stdin io.Reader) ([]Document, error) {
	var docs []Document
	var errs ErrorList
	decode := func(source string, r func() ([]byte, error)) {
		data, err := r()
		if err != nil {
			errs = append(errs, &FieldError{Source: source, Msg: readErrMsg(err)})
			return
		}
		ds, err := Decode(source, data)
		docs = append(docs, ds...)
		errs = appendErr(errs, err)
	}
	for _, p := range paths {
		if p == "-" {
			decode("-", func() ([]byte, error) {
				if stdin == nil {
					return nil, errors.New("no standard input")
				}
				return io.ReadAll(stdin)
			})
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &FieldError{Source: p, Msg: readErrMsg(err)})
			continue
		}
		if !fi.IsDir() {
			decode(p, func() ([]byte, error) { return os.ReadFile(p) })
			continue
		}
		files, err := manifestFiles(p, recursive)
		if err != nil {
			errs = append(errs, &FieldError{Source: p, Msg: readErrMsg(err)})
		}
		for _, f := range files {
			decode(f, func() ([]byte, error) { return os.ReadFile(f) })
		}
	}
	return docs, errs.Err()
}

// manifestFiles lists the manifest files under dir in lexical order.
func manifestFiles(dir string, recursive bool) ([]string, error) {
	var files []string
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		dir += string(filepath.Separator) // walk the directory a symlink points to
	}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != dir && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		if !manifestExts[strings.ToLower(filepath.Ext(p))] {
			return nil
		}
		if e.Type()&fs.ModeSymlink != 0 {
			if fi, err := os.Stat(p); err != nil || fi.IsDir() {
				return nil
			}
		}
		files = append(files, p)
		return nil
	})
	return files, err
}

func readErrMsg(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "cannot read: " + pe.Err.Error()
	}
	return "cannot read: " + err.Error()
}
