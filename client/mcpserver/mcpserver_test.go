package mcpserver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
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

// TestPanicIsToolError: a tool that panics answers with a tool error and
// the server keeps serving.
func TestPanicIsToolError(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "v0"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "boom"}, safe("boom", func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, struct{}, error) {
		var m map[string]int
		m["x"] = 1 // nil map write
		return nil, struct{}{}, nil
	}))
	st, ct := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "v0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for range 2 {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "boom", Arguments: map[string]any{}})
		if err != nil || !res.IsError {
			t.Fatalf("err %v, result %+v: want a tool error", err, res)
		}
		if txt := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(txt, "internal error") {
			t.Errorf("text %q", txt)
		}
	}
}
