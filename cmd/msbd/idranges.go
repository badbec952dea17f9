package main

import "msb.dev/msb/apis/v1alpha1"

// idRangesItem says in `msbctl info` whether container sandboxes each get a
// host id range of their own (with idmapped image layers), or share one and
// why (sharedReason, from the container driver).
func idRangesItem(sharedReason string) v1alpha1.InfoItem {
	if sharedReason != "" {
		return v1alpha1.InfoItem{Name: "host id ranges", Value: "shared by all sandboxes", Detail: sharedReason}
	}
	return v1alpha1.InfoItem{Name: "host id ranges", Value: "one per sandbox (idmapped image layers)", OK: true}
}
