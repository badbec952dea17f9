package mcpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// ResourcesInput bounds a sandbox.
type ResourcesInput struct {
	CPUs   string `json:"cpus,omitempty" jsonschema:"CPU limit, e.g. 1 or 0.5"`
	Memory string `json:"memory,omitempty" jsonschema:"memory limit, e.g. 512Mi or 2Gi"`
	PIDs   int64  `json:"pids,omitempty" jsonschema:"most processes at once"`
	Disk   string `json:"disk,omitempty" jsonschema:"disk limit of the sandbox's writable files, e.g. 1Gi"`
}

// CreateInput is sandbox_create's input.
type CreateInput struct {
	Name       string            `json:"name,omitempty" jsonschema:"name of the sandbox (lowercase letters, digits, -); a fresh mcp-XXXXXXXX when empty"`
	Image      string            `json:"image" jsonschema:"container image, e.g. python:3.12-slim or alpine:3.20"`
	Command    []string          `json:"command,omitempty" jsonschema:"main command (argv); default: sleep forever, so the sandbox waits for sandbox_exec"`
	Env        map[string]string `json:"env,omitempty" jsonschema:"environment variables of the main command and of every exec"`
	WorkingDir string            `json:"workingDir,omitempty" jsonschema:"working directory of commands and relative paths; default the image's"`
	Labels     map[string]string `json:"labels,omitempty" jsonschema:"labels of the sandbox: plain names (no prefix/), stored under mcp.msb.dev/ so they never select a NetworkPolicy"`
	Resources  *ResourcesInput   `json:"resources,omitempty" jsonschema:"limits, each at most the operator's cap (the cap when absent)"`
	TTL        string            `json:"ttl,omitempty" jsonschema:"lifetime after which the sandbox is deleted, e.g. 30m or 2h; default the server's"`
}

// SandboxInfo describes one sandbox.
type SandboxInfo struct {
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	Image        string `json:"image"`
	Phase        string `json:"phase"`
	Ready        bool   `json:"ready"`
	Reason       string `json:"reason,omitempty" jsonschema:"why it is not ready"`
	CreatedByMCP bool   `json:"createdByMCP"`
	ExpiresAt    string `json:"expiresAt,omitempty"`
}

func info(sb *v1alpha1.Sandbox) SandboxInfo {
	i := SandboxInfo{
		Name: sb.Metadata.Name, Namespace: sb.Metadata.Namespace, Image: sb.Spec.Image,
		Phase: string(sb.Status.Phase), CreatedByMCP: sb.Metadata.Labels[LabelCreatedBy] == "true",
	}
	if c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		i.Ready = c.Status == v1alpha1.ConditionTrue
		if !i.Ready && c.Reason != "" {
			i.Reason = c.Reason
			if c.Message != "" {
				i.Reason += ": " + c.Message
			}
		}
	}
	if sb.Status.ExpiresAt != nil {
		i.ExpiresAt = sb.Status.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return i
}

// defaultCommand keeps a sandbox alive for sandbox_exec.
var defaultCommand = []string{"sleep", "2147483647"}

func (s *server) create(ctx context.Context, _ *mcp.CallToolRequest, in CreateInput) (*mcp.CallToolResult, SandboxInfo, error) {
	if strings.TrimSpace(in.Image) == "" {
		return nil, SandboxInfo{}, fmt.Errorf("sandbox_create: image is required, e.g. alpine:3.20")
	}
	name := in.Name
	if name == "" {
		b := make([]byte, 4)
		rand.Read(b)
		name = "mcp-" + hex.EncodeToString(b)
	}
	if err := checkImage(in.Image); err != nil {
		return nil, SandboxInfo{}, err
	}
	labels, err := clientLabels(in.Labels)
	if err != nil {
		return nil, SandboxInfo{}, err
	}
	if err := s.checkPolicyLabels(ctx, labels); err != nil {
		return nil, SandboxInfo{}, err
	}
	res, err := s.opt.Limits.resources(in.Resources)
	if err != nil {
		return nil, SandboxInfo{}, err
	}
	sb := &v1alpha1.Sandbox{
		TypeMeta: v1alpha1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindSandbox},
		Metadata: v1alpha1.ObjectMeta{Name: name, Namespace: s.ns, Labels: labels},
		Spec: v1alpha1.SandboxSpec{
			Image:      in.Image,
			Command:    in.Command,
			WorkingDir: in.WorkingDir,
			Resources:  res,
		},
	}
	if len(sb.Spec.Command) == 0 {
		sb.Spec.Command = defaultCommand
	}
	keys := make([]string, 0, len(in.Env))
	for k := range in.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// Literal values only: a Secret reference is the operator's choice.
		sb.Spec.Env = append(sb.Spec.Env, v1alpha1.EnvVar{Name: k, Value: in.Env[k]})
	}
	switch {
	case in.TTL != "":
		d := v1alpha1.Duration(in.TTL)
		sb.Spec.Lifecycle.TTL = &d
	case s.opt.DefaultTTL > 0:
		d := v1alpha1.Duration(s.opt.DefaultTTL.String())
		sb.Spec.Lifecycle.TTL = &d
	}
	if _, err := s.c.Create(ctx, sb); err != nil {
		return nil, SandboxInfo{}, s.toolError("sandbox_create", name, err)
	}
	got, err := s.waitReady(ctx, name)
	if err != nil {
		// Nothing half-made is left behind: a sandbox that cannot start goes.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if s.c.Delete(dctx, v1alpha1.KindSandbox, s.ns, name) == nil && s.waitGone(dctx, name) {
			return nil, SandboxInfo{}, fmt.Errorf("sandbox_create: %v; the sandbox %q was deleted", err, name)
		}
		return nil, SandboxInfo{}, fmt.Errorf("sandbox_create: %v; deleting the sandbox %q did not finish (sandbox_delete it)", err, name)
	}
	i := info(got)
	return text("sandbox %q is ready (image %s)", name, in.Image), i, nil
}

// checkPolicyLabels refuses agent labels that a NetworkPolicy selects on:
// which policies apply to a sandbox is the operator's choice, and labels
// are how it is made. The prefix (clientLabels) keeps labels away from
// policies written later; this catches an operator policy that selects on
// an mcp.msb.dev/ key today.
func (s *server) checkPolicyLabels(ctx context.Context, labels map[string]string) error {
	if len(labels) <= 1 {
		return nil // only the MCP marker
	}
	objs, _, err := s.c.List(ctx, v1alpha1.KindNetworkPolicy, s.ns, "")
	if err != nil {
		return s.toolError("sandbox_create", "", err)
	}
	for _, o := range objs {
		np, ok := o.(*v1alpha1.NetworkPolicy)
		if !ok {
			continue
		}
		for k := range np.Spec.SandboxSelector.MatchLabels {
			if _, set := labels[k]; set && k != LabelCreatedBy {
				return fmt.Errorf("sandbox_create: label %q is what NetworkPolicy %q selects sandboxes by; which policies apply is the operator's choice, so leave it out (MCP sandboxes all carry %s=true)", k, np.Metadata.Name, LabelCreatedBy)
			}
		}
	}
	return nil
}

// waitReady polls until the sandbox is Ready, or fails for a reason that
// waiting does not cure (its image cannot be pulled or is invalid, it
// failed or exited).
func (s *server) waitReady(ctx context.Context, name string) (*v1alpha1.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.ReadyTimeout)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	var last *v1alpha1.Sandbox
	for {
		obj, err := s.c.Get(ctx, v1alpha1.KindSandbox, s.ns, name)
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		if sb, ok := obj.(*v1alpha1.Sandbox); ok && err == nil {
			last = sb
			if sb.Status.ObservedGeneration >= sb.Metadata.Generation {
				ready := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady)
				img := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionImageReady)
				switch {
				case ready != nil && ready.Status == v1alpha1.ConditionTrue:
					return sb, nil
				case img != nil && img.Status == v1alpha1.ConditionFalse:
					return nil, fmt.Errorf("image %q: %s: %s", sb.Spec.Image, img.Reason, img.Message)
				case sb.Status.Phase == v1alpha1.PhaseFailed || sb.Status.Phase == v1alpha1.PhaseSucceeded:
					return nil, fmt.Errorf("it %s before it was ready: %s", strings.ToLower(string(sb.Status.Phase)), info(sb).Reason)
				case ready != nil && stuck[ready.Reason]:
					return nil, fmt.Errorf("%s: %s", ready.Reason, ready.Message)
				}
			}
		}
		select {
		case <-ctx.Done():
			why := ""
			if last != nil {
				why = ": " + info(last).Reason
			}
			return nil, fmt.Errorf("not ready after %s%s", s.opt.ReadyTimeout, why)
		case <-t.C:
		}
	}
}

// stuck are Ready=False reasons msbd does not retry until something changes.
var stuck = map[string]bool{"InvalidImage": true, "AgentMissing": true, "MicroVMUnavailable": true, "DriverUnavailable": true}

// ListInput is sandbox_list's input.
type ListInput struct {
	MCPOnly bool `json:"mcpOnly,omitempty" jsonschema:"list only the sandboxes MCP sessions created (the only ones listed unless the operator allowed all)"`
}

// ListOutput is sandbox_list's result.
type ListOutput struct {
	Sandboxes []SandboxInfo `json:"sandboxes"`
}

func (s *server) list(ctx context.Context, _ *mcp.CallToolRequest, in ListInput) (*mcp.CallToolResult, ListOutput, error) {
	sel := ""
	if in.MCPOnly || !s.opt.AllSandboxes {
		sel = LabelCreatedBy + "=true"
	}
	objs, _, err := s.c.List(ctx, v1alpha1.KindSandbox, s.ns, sel)
	if err != nil {
		return nil, ListOutput{}, s.toolError("sandbox_list", "", err)
	}
	out := ListOutput{Sandboxes: []SandboxInfo{}}
	var b strings.Builder
	for _, o := range objs {
		sb, ok := o.(*v1alpha1.Sandbox)
		if !ok {
			continue
		}
		i := info(sb)
		out.Sandboxes = append(out.Sandboxes, i)
		fmt.Fprintf(&b, "%s\t%s\tready=%v\t%s\n", i.Name, i.Phase, i.Ready, i.Image)
	}
	if len(out.Sandboxes) == 0 {
		b.WriteString("no sandboxes\n")
	}
	return text("%s", b.String()), out, nil
}

// NameInput names a sandbox.
type NameInput struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
}

// DeleteOutput is sandbox_delete's result.
type DeleteOutput struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

func (s *server) delete(ctx context.Context, _ *mcp.CallToolRequest, in NameInput) (*mcp.CallToolResult, DeleteOutput, error) {
	if err := s.own(ctx, "sandbox_delete", in.Name); err != nil {
		return nil, DeleteOutput{}, err
	}
	if err := s.c.Delete(ctx, v1alpha1.KindSandbox, s.ns, in.Name); err != nil {
		return nil, DeleteOutput{}, s.toolError("sandbox_delete", in.Name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if s.waitGone(wctx, in.Name) {
		return text("sandbox %q deleted", in.Name), DeleteOutput{Name: in.Name, Deleted: true}, nil
	}
	return text("sandbox %q is being deleted", in.Name), DeleteOutput{Name: in.Name}, nil
}

// waitGone polls until the sandbox no longer exists (its finalizer ran);
// false if ctx ends first.
func (s *server) waitGone(ctx context.Context, name string) bool {
	for {
		_, err := s.c.Get(ctx, v1alpha1.KindSandbox, s.ns, name)
		if err != nil && client.IsNotFound(err) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogsInput is sandbox_logs's input.
type LogsInput struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	Tail int    `json:"tail,omitempty" jsonschema:"how many of the last lines (default 100, at most 10000)"`
}

// LogsOutput is sandbox_logs's result.
type LogsOutput struct {
	Name string `json:"name"`
	Logs string `json:"logs"`
}

func (s *server) logs(ctx context.Context, _ *mcp.CallToolRequest, in LogsInput) (*mcp.CallToolResult, LogsOutput, error) {
	if err := s.own(ctx, "sandbox_logs", in.Name); err != nil {
		return nil, LogsOutput{}, err
	}
	n := in.Tail
	if n <= 0 {
		n = DefaultTail
	}
	n = min(n, 10000)
	tb := &tailBuffer{max: MaxOutput}
	if err := s.c.Logs(ctx, s.ns, in.Name, false, tb); err != nil {
		return nil, LogsOutput{}, s.toolError("sandbox_logs", in.Name, err)
	}
	b := tb.bytes()
	if tb.dropped && len(b) > 0 {
		// The first line may be cut: start at a whole one.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	logs := strings.ToValidUTF8(strings.Join(lines, ""), "\uFFFD")
	return text("%s", logs), LogsOutput{Name: in.Name, Logs: logs}, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	buf     []byte
	max     int
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tailBuffer) bytes() []byte { return t.buf }
