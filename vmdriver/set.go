package vmdriver

import (
	"fmt"
	"sort"
)

// Isolation levels a Sandbox may ask for (spec.isolation) and a driver may
// provide (Driver.Isolation).
const (
	IsolationAuto      = "auto"
	IsolationMicroVM   = "microvm"
	IsolationContainer = "container"
)

// UnavailableError says why no driver here provides the isolation asked for.
type UnavailableError struct {
	Isolation string
	Reason    string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("isolation %s is not available on this host: %s", e.Isolation, e.Reason)
}

// Set is the drivers msbd holds, keyed by name, and the rule that picks one
// for a Sandbox: auto takes the strongest isolation the host runs (a microVM
// where one can boot, else a container), microvm and container take exactly
// that. A sandbox keeps the driver recorded in its status; Set.Get finds it
// again for later reconciles, adoption and orphan collection.
type Set struct {
	byName map[string]Driver
	all    []Driver // by name: the order every caller sees
	// microVMReason says why no microVM driver is in the set, for users.
	microVMReason string
}

// NewSet holds drivers; microVMReason tells users why microVMs are
// unavailable when no driver of the set provides them (the host probe's
// finding: no KVM, no libkrun).
func NewSet(microVMReason string, drivers ...Driver) *Set {
	s := &Set{byName: map[string]Driver{}, microVMReason: microVMReason}
	for _, d := range drivers {
		s.byName[d.Name()] = d
	}
	for _, d := range s.byName {
		s.all = append(s.all, d)
	}
	sort.Slice(s.all, func(i, j int) bool { return s.all[i].Name() < s.all[j].Name() })
	return s
}

// MicroVMReason says why no driver of the set gives microVMs ("" when one
// does, or when nothing was said).
func (s *Set) MicroVMReason() string {
	if s.byIsolation(IsolationMicroVM) != nil {
		return ""
	}
	return s.microVMReason
}

// Get returns the driver named name.
func (s *Set) Get(name string) (Driver, bool) {
	d, ok := s.byName[name]
	return d, ok
}

// All returns every driver, ordered by name. The slice is shared: do not
// change it.
func (s *Set) All() []Driver { return s.all }

func (s *Set) byIsolation(iso string) Driver {
	for _, d := range s.All() {
		if d.Isolation() == iso {
			return d
		}
	}
	return nil
}

// Choose returns the driver for a Sandbox asking for isolation ("" is auto),
// or an *UnavailableError.
func (s *Set) Choose(isolation string) (Driver, error) {
	switch isolation {
	case "", IsolationAuto:
		if d := s.byIsolation(IsolationMicroVM); d != nil {
			return d, nil
		}
		if d := s.byIsolation(IsolationContainer); d != nil {
			return d, nil
		}
		return nil, &UnavailableError{Isolation: IsolationAuto, Reason: "no sandbox driver is available"}
	case IsolationMicroVM:
		if d := s.byIsolation(IsolationMicroVM); d != nil {
			return d, nil
		}
		reason := s.microVMReason
		if reason == "" {
			reason = "msbd has no microVM driver"
		}
		return nil, &UnavailableError{Isolation: IsolationMicroVM, Reason: reason}
	case IsolationContainer:
		if d := s.byIsolation(IsolationContainer); d != nil {
			return d, nil
		}
		return nil, &UnavailableError{Isolation: IsolationContainer, Reason: "runc is not available"}
	}
	return nil, &UnavailableError{Isolation: isolation, Reason: "unknown isolation (want auto, microvm or container)"}
}
