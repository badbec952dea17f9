package mcpserver

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestArgv(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		bad  bool
	}{
		{`"ls -la | head"`, "sh\x00-c\x00ls -la | head", false},
		{`["python3", "-c", "print(1)"]`, "python3\x00-c\x00print(1)", false},
		{`""`, "", true},
		{`[]`, "", true},
		{`[1]`, "", true},
		{`{"a":1}`, "", true},
	} {
		var v any
		json.Unmarshal([]byte(c.in), &v)
		got, err := argv(v)
		if (err != nil) != c.bad || strings.Join(got, "\x00") != c.want {
			t.Errorf("%s: %q, %v", c.in, got, err)
		}
	}
}

func TestCappedAndTail(t *testing.T) {
	c := &capped{max: 5}
	c.Write([]byte("abc"))
	c.Write([]byte("defg"))
	if c.buf.String() != "abcde" || !c.cut {
		t.Errorf("capped: %q %v", c.buf.String(), c.cut)
	}
	tb := &tailBuffer{max: 6}
	tb.Write([]byte("abcd"))
	tb.Write([]byte("efgh"))
	if string(tb.bytes()) != "cdefgh" || !tb.dropped {
		t.Errorf("tail: %q", tb.bytes())
	}
}

func TestExecSchemaTakesStringOrArray(t *testing.T) {
	s := execSchema()
	cmd := s.Properties["command"]
	if strings.Join(cmd.Types, ",") != "string,array" || cmd.Items.Type != "string" {
		t.Errorf("command schema: %+v", cmd)
	}
	if !strings.Contains(strings.Join(s.Required, ","), "command") || !strings.Contains(strings.Join(s.Required, ","), "name") {
		t.Errorf("required: %v", s.Required)
	}
}
