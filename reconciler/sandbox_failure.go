package reconciler

import (
	"errors"

	"msb.dev/msb/vmdriver"
)

const (
	// ReasonVolumeRefused: a volume's host path holds a symbolic link or
	// reaches msbd's state directory. The sandbox waits (retried with
	// backoff, so fixing the host path is enough) and says which component
	// to fix.
	ReasonVolumeRefused = "VolumeRefused"
	// ReasonHostLimit: the start failed on a host budget (keys, open files,
	// namespaces, cgroups, mounts, pids); the message names the sysctl to
	// raise. Retried with backoff, so raising it (or other sandboxes
	// ending) is enough.
	ReasonHostLimit = "HostLimit"
)

// startFailure is the Ready reason for a sandbox whose Create or Start
// failed with err, and err as it is told (a host limit first says which).
func startFailure(err error) (string, error) {
	var hl *vmdriver.HostLimitError
	switch {
	case errors.Is(err, vmdriver.ErrVolumeRefused):
		return ReasonVolumeRefused, err
	case errors.As(err, &hl):
		return ReasonHostLimit, hl
	}
	if err2 := vmdriver.AsHostLimit(err); err2 != err {
		return ReasonHostLimit, err2
	}
	return ReasonFailed, err
}
