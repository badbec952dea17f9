package main

import (
	"os"
	"os/exec"

	"msb.dev/msb/apis/v1alpha1"
)

// idRangesItem says in `msbctl info` whether container sandboxes each get a
// host id range of their own (with idmapped image layers), or share one and
// why (sharedReason, from the container driver).
func idRangesItem(sharedReason string) v1alpha1.InfoItem {
	if sharedReason != "" {
		return v1alpha1.InfoItem{Name: "host id ranges", Value: "shared by all sandboxes", Detail: sharedReason}
	}
	return v1alpha1.InfoItem{Name: "host id ranges", Value: "one per sandbox (idmapped image layers)", OK: true}
}

// diskQuotaItem says in `msbctl info` whether sandboxes' disk limits can be
// made here: a loop device per sandbox and mkfs.ext4 for the template.
func diskQuotaItem(defaultDisk string) v1alpha1.InfoItem {
	it := v1alpha1.InfoItem{Name: "disk quota"}
	if f, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0); err != nil {
		it.Value, it.Detail = "unavailable", "loop devices: "+err.Error()+"; sandboxes with a disk limit cannot start (--default-disk 0 turns the default off)"
		return it
	} else {
		f.Close()
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		it.Value, it.Detail = "unavailable", "mkfs.ext4 not found (apt-get install e2fsprogs); sandboxes with a disk limit cannot start"
		return it
	}
	it.Value, it.OK = "an ext4 on a loop device per sandbox (default "+defaultDisk+")", true
	return it
}
