package apiserver_test

import (
	"testing"

	"msb.dev/msb/apis/v1alpha1"
)

func TestInfo(t *testing.T) {
	e := newEnv(t)
	h, err := e.client.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version.Version != "test" {
		t.Errorf("version %+v: want the server's", h.Version)
	}
	if len(h.Drivers) != 1 || h.Drivers[0] != (v1alpha1.DriverInfo{Name: "fake", Isolation: "none", Available: true, Auto: true}) {
		t.Errorf("drivers %+v: want what Config.HostInfo said", h.Drivers)
	}
}
