package v1alpha1

// HostInfo is what msbd found on its host (GET /info): which sandbox
// drivers it runs and why the others are unavailable, and the host facts
// behind that. msbctl info prints it.
//
// Facts are grouped in Sections so that a new probe (host limits, idmapped
// mounts, …) adds a section without a change to this type or to msbctl:
// every section prints the same way.
type HostInfo struct {
	Version VersionInfo `json:"version"`
	// Drivers are every driver msbd knows of, available or not, in the
	// order auto prefers them.
	Drivers []DriverInfo `json:"drivers"`
	// Sections are the host facts, in the order msbd found them.
	Sections []InfoSection `json:"sections"`
}

// DriverInfo is one sandbox driver.
type DriverInfo struct {
	// Name is the driver's name ("krun", "container"), as in status.driver.
	Name string `json:"name"`
	// Isolation is what sandboxes it runs get ("microvm", "container").
	Isolation string `json:"isolation"`
	Available bool   `json:"available"`
	// Reason says why it is unavailable (empty when it is available).
	Reason string `json:"reason,omitempty"`
	// Auto is true for the driver isolation: auto picks.
	Auto bool `json:"auto,omitempty"`
}

// InfoSection is a group of host facts ("libkrun", "kvm", "runc", …).
type InfoSection struct {
	Name  string     `json:"name"`
	Items []InfoItem `json:"items"`
}

// InfoItem is one fact. OK is false for a fact that keeps something from
// working (a missing device, an unloadable library); Detail says more.
type InfoItem struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Section returns the section called name, or nil.
func (h *HostInfo) Section(name string) *InfoSection {
	for i := range h.Sections {
		if h.Sections[i].Name == name {
			return &h.Sections[i]
		}
	}
	return nil
}

// Add appends a fact to the section, creating it on first use.
func (h *HostInfo) Add(section string, item InfoItem) {
	if s := h.Section(section); s != nil {
		s.Items = append(s.Items, item)
		return
	}
	h.Sections = append(h.Sections, InfoSection{Name: section, Items: []InfoItem{item}})
}
