package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/apiserver"
	"msb.dev/msb/store/storetest"
)

// hostInfo is what an msbd without KVM and with runc reports.
var hostInfo = v1alpha1.HostInfo{
	Drivers: []v1alpha1.DriverInfo{
		{Name: "krun", Isolation: "microvm", Reason: "no usable KVM device (open read-write /dev/kvm: no such file or directory); loading libkrun libkrun.so.1: libkrun.so.1: cannot open shared object file: No such file or directory"},
		{Name: "container", Isolation: "container", Available: true, Auto: true},
	},
	Sections: []v1alpha1.InfoSection{
		{Name: "libkrun", Items: []v1alpha1.InfoItem{{Name: "tried", Value: "libkrun.so.1"}, {Name: "loaded", Value: "no", Detail: "libkrun.so.1: cannot open shared object file"}}},
		{Name: "kvm", Items: []v1alpha1.InfoItem{{Name: "device", Value: "/dev/kvm", Detail: "open read-write: no such file or directory"}}},
		{Name: "runc", Items: []v1alpha1.InfoItem{{Name: "path", Value: "/usr/sbin/runc", OK: true}, {Name: "version", Value: "1.1.5", OK: true}}},
	},
}

func infoServer(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "msbctl-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "msbd.sock")
	ln, err := apiserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiserver.New(apiserver.Config{Store: storetest.Open(t), Runtime: notRunning{},
		Version: v1alpha1.VersionInfo{Version: "test", Driver: "container"}, HostInfo: func() v1alpha1.HostInfo { return hostInfo }})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestInfo(t *testing.T) {
	sock := infoServer(t)
	code, out, errs := cli(t, sock, "info")
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	golden(t, "info", out)

	code, out, _ = cli(t, sock, "info", "-o", "json")
	var got v1alpha1.HostInfo
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || len(got.Drivers) != 2 || got.Version.Version != "test" {
		t.Errorf("-o json: exit %d, %s", code, out)
	}
	if code, _, errs := cli(t, sock, "info", "-o", "wide"); code != exitUsage || errs == "" {
		t.Errorf("-o wide: exit %d, %q; want a usage error", code, errs)
	}
	if code, _, errs := cli(t, sock, "info", "extra"); code != exitUsage || errs == "" {
		t.Errorf("an argument: exit %d, %q; want a usage error", code, errs)
	}
}
