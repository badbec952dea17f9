package reconciler

import (
	"errors"

	"msb.dev/msb/vmdriver"
)

// ReasonVolumeRefused: a volume's host path holds a symbolic link or reaches
// msbd's state directory. The sandbox waits (retried with backoff, so fixing
// the host path is enough) and says which component to fix.
const ReasonVolumeRefused = "VolumeRefused"

// startFailure is the Ready reason for a sandbox whose Create or Start
// failed with err.
func startFailure(err error) string {
	switch {
	case errors.Is(err, vmdriver.ErrVolumeRefused):
		return ReasonVolumeRefused
	}
	return ReasonFailed
}
