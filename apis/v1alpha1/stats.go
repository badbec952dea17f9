package v1alpha1

import "time"

// SandboxStats is a sandbox's live resource use against its limits, read
// from its cgroups (GET .../sandboxes/NAME/stats; msbctl top). A limit of 0
// means none.
type SandboxStats struct {
	Time time.Time `json:"time"`
	// CPUUsageNanos is the CPU time the sandbox has used, all CPUs summed;
	// two samples give a rate.
	CPUUsageNanos uint64 `json:"cpuUsageNanos"`
	// CPULimitMilli is the CPU quota in thousandths of a CPU.
	CPULimitMilli    int64  `json:"cpuLimitMilli,omitempty"`
	MemoryBytes      uint64 `json:"memoryBytes"`
	MemoryLimitBytes uint64 `json:"memoryLimitBytes,omitempty"`
	PIDs             uint64 `json:"pids"`
	PIDsLimit        uint64 `json:"pidsLimit,omitempty"`
}

// PortForwardProtocol is the Upgrade token of POST
// .../sandboxes/NAME/portforward?port=N: after "101 Switching Protocols" the
// connection carries the bytes of one TCP connection to 127.0.0.1:N inside
// the sandbox, both ways, unframed; each side's end is a half close.
const PortForwardProtocol = "msb-portforward"
