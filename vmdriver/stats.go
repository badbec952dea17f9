package vmdriver

import "msb.dev/msb/apis/v1alpha1"

// StatsReader is implemented by drivers that can read a running sandbox's
// resource use and limits (from its cgroups): msbctl top.
type StatsReader interface {
	Stats(id string) (v1alpha1.SandboxStats, error)
}
