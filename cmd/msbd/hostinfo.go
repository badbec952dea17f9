package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/krun"
)

// hostFacts are what msbd found at start, kept for GET /info.
type hostFacts struct {
	krun krun.Finding
	host vmdriver.HostInfo
	// containerErr is why the container driver could not be made.
	containerErr error
	// sharedIDs is why container sandboxes share one host id range ("":
	// each has its own).
	sharedIDs string
	// defaultDisk is msbd's --default-disk.
	defaultDisk string
}

// info builds the answer of GET /info for drivers (the set msbd runs) and
// the facts found at start. Other features add their own sections here.
func (f *hostFacts) info(drivers *vmdriver.Set) v1alpha1.HostInfo {
	var h v1alpha1.HostInfo
	auto, _ := drivers.Choose(vmdriver.IsolationAuto)
	for _, want := range []struct{ name, iso string }{{"krun", vmdriver.IsolationMicroVM}, {"container", vmdriver.IsolationContainer}} {
		d := v1alpha1.DriverInfo{Name: want.name, Isolation: want.iso}
		if got, ok := drivers.Get(want.name); ok {
			d.Available = true
			d.Auto = auto != nil && auto.Name() == got.Name()
		} else if _, err := drivers.Choose(want.iso); err != nil {
			d.Reason = err.Error()
			if ue := (*vmdriver.UnavailableError)(nil); errors.As(err, &ue) {
				d.Reason = ue.Reason
			}
		}
		if want.name == "container" && f.containerErr != nil {
			d.Reason = f.containerErr.Error()
		}
		h.Drivers = append(h.Drivers, d)
	}

	k := f.krun
	h.Add("libkrun", v1alpha1.InfoItem{Name: "tried", Value: k.LibraryTried, OK: k.Library != ""})
	if k.Library != "" {
		h.Add("libkrun", v1alpha1.InfoItem{Name: "loaded", Value: k.Library, OK: true})
		fw := v1alpha1.InfoItem{Name: "libkrunfw", Value: k.Libkrunfw, OK: k.Libkrunfw != ""}
		if fw.Value == "" {
			fw.Value, fw.Detail = "not found", "libkrun needs it to boot a guest kernel: install libkrunfw"
		}
		h.Add("libkrun", fw)
		maxCPU := "unknown"
		if k.MaxVCPUs > 0 {
			maxCPU = strconv.Itoa(k.MaxVCPUs)
		}
		h.Add("libkrun", v1alpha1.InfoItem{Name: "max vCPUs", Value: maxCPU, OK: true})
		h.Add("libkrun", v1alpha1.InfoItem{Name: "features", Value: orNone(strings.Join(k.Features, ", ")), OK: true})
		h.Add("libkrun", v1alpha1.InfoItem{Name: "nested virtualization", Value: yesNo(k.NestedVirt), OK: true})
		if len(k.MissingOptional) > 0 {
			h.Add("libkrun", v1alpha1.InfoItem{Name: "optional symbols missing", Value: strings.Join(k.MissingOptional, ", "), OK: true})
		}
	} else {
		h.Add("libkrun", v1alpha1.InfoItem{Name: "loaded", Value: "no", Detail: k.LibraryError})
	}
	kvm := v1alpha1.InfoItem{Name: "device", Value: k.KVMDevice, OK: k.KVM}
	switch {
	case !k.KVM:
		kvm.Detail = k.KVMError
	case !k.KVMCharDevice:
		kvm.Detail = "opens read-write, but is not a character device (a stand-in)"
	default:
		kvm.Detail = "opens read-write"
	}
	h.Add("kvm", kvm)

	if f.host.RuncPath == "" {
		h.Add("runc", v1alpha1.InfoItem{Name: "path", Value: "not found", Detail: "install runc (apt-get install runc)"})
	} else {
		h.Add("runc", v1alpha1.InfoItem{Name: "path", Value: f.host.RuncPath, OK: true})
		h.Add("runc", v1alpha1.InfoItem{Name: "version", Value: orNone(f.host.RuncVersion), OK: f.host.RuncVersion != ""})
	}
	h.Add("host", cgroupVersion())
	h.Add("host", userNamespaces())
	h.Add("host", idRangesItem(f.sharedIDs))
	h.Add("host", diskQuotaItem(f.defaultDisk))
	h.Add("host", nftablesUsable())
	return h
}

func cgroupVersion() v1alpha1.InfoItem {
	it := v1alpha1.InfoItem{Name: "cgroups", Value: "v1", OK: true}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		it.Value = "v2 (unified)"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
		it.Value = "hybrid (v1 with v2 at /sys/fs/cgroup/unified)"
	}
	return it
}

func userNamespaces() v1alpha1.InfoItem {
	it := v1alpha1.InfoItem{Name: "user namespaces"}
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil {
		it.Value, it.Detail = "unknown", err.Error()
		return it
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if n == 0 {
		it.Value, it.Detail = "disabled", "user.max_user_namespaces is 0: containers cannot map their users"
		return it
	}
	it.Value, it.OK = fmt.Sprintf("enabled (max %d)", n), true
	return it
}

func nftablesUsable() v1alpha1.InfoItem {
	it := v1alpha1.InfoItem{Name: "nftables"}
	c, err := nftables.New()
	if err == nil {
		defer c.CloseLasting()
		_, err = c.ListTables()
	}
	if err != nil {
		it.Value, it.Detail = "unusable", err.Error()
		return it
	}
	it.Value, it.OK = "usable", true
	return it
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
