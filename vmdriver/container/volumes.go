package container

import (
	"fmt"
	"os"

	"msb.dev/msb/vmdriver"
)

var _ vmdriver.VolumeAdvisor = (*Driver)(nil)

// VolumeWarnings implements vmdriver.VolumeAdvisor: every sandbox's files
// belong to one host uid range, so what a sandbox writes into a read-write
// volume other host users can enter (a set-uid program of that uid, say) is
// theirs to run. Volumes that would reach msbd's state are refused by Create
// (checkVolumeSources); these are only warned about.
func (d *Driver) VolumeWarnings(spec vmdriver.Spec) []string {
	var out []string
	for _, m := range spec.Mounts {
		if m.ReadOnly {
			continue
		}
		fi, err := os.Stat(m.HostPath)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			continue
		}
		out = append(out, fmt.Sprintf(
			"volume %s: other host users can enter %s (mode %#o); files the sandbox writes there, set-uid programs included, are theirs to use: put it inside a root-owned directory of mode 0710 and the sandboxes' group, or mount it readOnly",
			m.Path, m.HostPath, fi.Mode().Perm()))
	}
	return out
}
