package mcpserver

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"msb.dev/msb/apis/v1alpha1"
)

// The MCP client is not trusted with what the operator decides: which
// sandboxes it may touch, which host files msbd opens, which policies
// select its sandboxes and how much of the host they take. This file holds
// those checks; each runs before msbd is asked to do anything.

// ClientLabelPrefix is put before every label key an MCP client asks for
// ("project" is stored as "mcp.msb.dev/project"). NetworkPolicies select
// sandboxes by labels, so a free-form key would let an agent put its
// sandbox under any policy the operator writes, now or later; under this
// prefix its labels can only match a policy that selects on mcp.msb.dev/
// keys, which an operator must never write.
const ClientLabelPrefix = "mcp.msb.dev/"

// Default caps of what sandbox_create may ask for (msbd's own defaults for
// memory, processes and disk: an MCP sandbox gets no more than an ordinary
// one unless the operator says so).
const (
	DefaultMaxMemory = "2Gi"
	DefaultMaxCPUs   = "2"
	DefaultMaxPIDs   = 4096
	DefaultMaxDisk   = "10Gi"
)

// Limits are the most a sandbox_create may ask for; a request without a
// value gets the cap. Zero fields are the defaults above.
type Limits struct {
	Memory v1alpha1.Quantity
	CPUs   v1alpha1.Quantity
	PIDs   int64
	Disk   v1alpha1.Quantity
}

// withDefaults fills unset caps.
func (l Limits) withDefaults() Limits {
	if l.Memory == "" {
		l.Memory = DefaultMaxMemory
	}
	if l.CPUs == "" {
		l.CPUs = DefaultMaxCPUs
	}
	if l.PIDs == 0 {
		l.PIDs = DefaultMaxPIDs
	}
	if l.Disk == "" {
		l.Disk = DefaultMaxDisk
	}
	return l
}

// Validate reports a cap that does not parse or is not positive, naming the
// flag that set it (flagPrefix + "memory" ...).
func (l Limits) Validate(flagPrefix string) error {
	l = l.withDefaults()
	for _, q := range []struct {
		name string
		v    v1alpha1.Quantity
	}{{"memory", l.Memory}, {"cpus", l.CPUs}, {"disk", l.Disk}} {
		if err := q.v.Validate(); err != nil {
			return fmt.Errorf("--%s%s: %w", flagPrefix, q.name, err)
		}
		if q.v.MilliValue() <= 0 {
			return fmt.Errorf("--%s%s %s: must be more than 0", flagPrefix, q.name, q.v)
		}
	}
	if l.PIDs < 0 {
		return fmt.Errorf("--%spids %d: must be more than 0", flagPrefix, l.PIDs)
	}
	return nil
}

// resources returns the limits of a new sandbox: what was asked, each at
// most its cap, and the cap for what was not asked (an absent limit would
// be msbd's default, which may be none at all for CPUs).
func (l Limits) resources(in *ResourcesInput) (v1alpha1.ResourceRequirements, error) {
	l = l.withDefaults()
	r := v1alpha1.ResourceRequirements{CPUs: l.CPUs, Memory: l.Memory, PIDs: l.PIDs, Disk: l.Disk}
	if in == nil {
		return r, nil
	}
	for _, q := range []struct {
		name, flag string
		in         string
		cap        v1alpha1.Quantity
		out        *v1alpha1.Quantity
	}{{"memory", "memory", in.Memory, l.Memory, &r.Memory}, {"cpus", "cpus", in.CPUs, l.CPUs, &r.CPUs}, {"disk", "disk", in.Disk, l.Disk, &r.Disk}} {
		if q.in == "" {
			continue
		}
		v := v1alpha1.Quantity(q.in)
		if err := v.Validate(); err != nil {
			return r, fmt.Errorf("sandbox_create: resources.%s: %v", q.name, err)
		}
		if v.MilliValue() <= 0 {
			return r, fmt.Errorf("sandbox_create: resources.%s %q: must be more than 0 (at most %s)", q.name, q.in, q.cap)
		}
		if v.MilliValue() > q.cap.MilliValue() {
			return r, fmt.Errorf("sandbox_create: resources.%s %q is more than the operator allows MCP sandboxes (%s); ask for at most %s", q.name, q.in, q.cap, q.cap)
		}
		*q.out = v
	}
	switch {
	case in.PIDs < 0:
		return r, fmt.Errorf("sandbox_create: resources.pids %d: must be more than 0 (at most %d)", in.PIDs, l.PIDs)
	case in.PIDs > l.PIDs:
		return r, fmt.Errorf("sandbox_create: resources.pids %d is more than the operator allows MCP sandboxes (%d); ask for at most %d", in.PIDs, l.PIDs, l.PIDs)
	case in.PIDs > 0:
		r.PIDs = in.PIDs
	}
	return r, nil
}

// checkImage refuses an image that is a host path: msbd runs as root, and
// opening a path an agent chose would read files the agent cannot (and
// tell it which exist, or block on a FIFO). Registry references, which
// also name images msbd already holds, are what MCP sandboxes use.
func checkImage(image string) error {
	// In any case: what a registry reference can never look like is refused
	// too, so a variant spelling cannot reach a local transport.
	lower := strings.ToLower(strings.TrimSpace(image))
	for _, lt := range v1alpha1.LocalImageTransports {
		if strings.HasPrefix(lower, lt) {
			return fmt.Errorf("sandbox_create: image %q is a path on the msbd host (%s); MCP sandboxes only use registry images such as alpine:3.20 or registry.example.com/team/tool:v1 (an operator can push a local image to a registry)", image, lt)
		}
	}
	return nil
}

// clientLabels turns the labels an MCP client asked for into the labels
// stored: each key under ClientLabelPrefix, and the MCP marker.
func clientLabels(in map[string]string) (map[string]string, error) {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]string{LabelCreatedBy: "true"}
	for _, k := range keys {
		if strings.Contains(k, "/") {
			return nil, fmt.Errorf("sandbox_create: label %q: a key is a plain name (no prefix/); it is stored as %s%s", k, ClientLabelPrefix, "NAME")
		}
		out[ClientLabelPrefix+k] = in[k]
	}
	return out, nil
}

// errNotMCP is the refusal to act on a sandbox no MCP session created.
func (s *server) errNotMCP(tool, name string) error {
	return fmt.Errorf("%s: sandbox %q was not created through MCP (it has no %s=true label): these tools only act on sandboxes MCP sessions created; "+
		"the operator can allow every sandbox with msbctl mcp --all-sandboxes or msbd --mcp-all-sandboxes", tool, name, LabelCreatedBy)
}

// own checks that the tool may act on sandbox name: it exists and an MCP
// session created it (unless the operator allowed all sandboxes). The
// operator's sandboxes may hold host volumes, Secrets or policies no agent
// should reach through exec, files or logs, or be able to delete.
func (s *server) own(ctx context.Context, tool, name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%s: name is required (sandbox_list shows the sandboxes)", tool)
	}
	if s.opt.AllSandboxes {
		return nil
	}
	obj, err := s.c.Get(ctx, v1alpha1.KindSandbox, s.ns, name)
	if err != nil {
		return s.toolError(tool, name, err)
	}
	sb, ok := obj.(*v1alpha1.Sandbox)
	if !ok || sb.Metadata.Labels[LabelCreatedBy] != "true" {
		return s.errNotMCP(tool, name)
	}
	return nil
}
