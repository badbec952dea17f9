package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Clone returns a deep copy of o (nil stays nil).
func Clone[T Object](o T) T {
	v := reflect.ValueOf(o)
	if !v.IsValid() || (v.Kind() == reflect.Pointer && v.IsNil()) {
		return o
	}
	data, err := json.Marshal(o)
	if err != nil {
		panic(fmt.Sprintf("v1alpha1.Clone: %v", err)) // every API type marshals
	}
	out := reflect.New(v.Type().Elem()).Interface().(T)
	if err := json.Unmarshal(data, out); err != nil {
		panic(fmt.Sprintf("v1alpha1.Clone: %v", err))
	}
	return out
}

// Redact returns a copy of a Secret with every value (stringData and data)
// replaced by Redacted, keys kept. Other objects are returned as they are.
// Everything shown to a user goes through Redact; ToYAML and ToJSON call it.
func Redact(obj Object) Object {
	s, ok := obj.(*Secret)
	if !ok || s == nil {
		return obj
	}
	c := Clone(s)
	for k := range c.Spec.StringData {
		c.Spec.StringData[k] = Redacted
	}
	for k := range c.Spec.Data {
		c.Spec.Data[k] = Redacted
	}
	return c
}

// ToYAML renders obj as kubectl does (apiVersion, kind, metadata, spec,
// status; empty fields left out), with Secret values redacted. It is for
// output to users; use encoding/json for the wire and the store.
func ToYAML(obj Object) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(Redact(obj)); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ToJSON renders obj as indented JSON with the same fields, in the same order,
// as ToYAML, with Secret values redacted. It is for output to users; use
// encoding/json for the wire and the store.
func ToJSON(obj Object) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(Redact(obj)); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, &n, ""); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// writeJSON writes a yaml.Node made by Node.Encode as JSON.
func writeJSON(b *bytes.Buffer, n *yaml.Node, indent string) error {
	const step = "    "
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return fmt.Errorf("ToJSON: document with %d nodes", len(n.Content))
		}
		return writeJSON(b, n.Content[0], indent)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteString("{\n")
		for i := 0; i+1 < len(n.Content); i += 2 {
			b.WriteString(indent + step)
			writeJSONString(b, n.Content[i].Value)
			b.WriteString(": ")
			if err := writeJSON(b, n.Content[i+1], indent+step); err != nil {
				return err
			}
			if i+2 < len(n.Content) {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[\n")
		for i, item := range n.Content {
			b.WriteString(indent + step)
			if err := writeJSON(b, item, indent+step); err != nil {
				return err
			}
			if i+1 < len(n.Content) {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			b.WriteString("null")
		case "!!bool", "!!int":
			b.WriteString(n.Value)
		case "!!float":
			if _, err := strconv.ParseFloat(n.Value, 64); err == nil && json.Valid([]byte(n.Value)) {
				b.WriteString(n.Value)
			} else {
				writeJSONString(b, n.Value)
			}
		default:
			writeJSONString(b, n.Value)
		}
	default:
		return fmt.Errorf("ToJSON: unexpected YAML node kind %v", n.Kind)
	}
	return nil
}

// writeJSONString writes s quoted, without escaping <, > and & (so that
// "<redacted>" reads as such).
func writeJSONString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}
