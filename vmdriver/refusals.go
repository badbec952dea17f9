package vmdriver

import "errors"

// ErrVolumeRefused is wrapped by a Create or Start error that refuses one
// of the sandbox's volumes (a link in its host path, a path that reaches
// msbd's state): the operator must change the host path or the spec, and
// the reconciler says so with its own reason rather than a generic failure.
var ErrVolumeRefused = errors.New("volume refused")
