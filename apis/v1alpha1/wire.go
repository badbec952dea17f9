package v1alpha1

import "time"

// Wire types of the API that are not resources: both msbd (apiserver) and
// its clients use them, so they live here rather than in either.

// VersionInfo describes the server (GET /version).
type VersionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	// Driver and Isolation are what a Sandbox with isolation auto gets.
	Driver    string `json:"driver"`
	Isolation string `json:"isolation"`
}

// ImageInfo describes an image msbd holds.
type ImageInfo struct {
	Ref     string    `json:"ref" yaml:"ref"`         // the reference as written when pulled
	Name    string    `json:"name" yaml:"name"`       // canonical name, e.g. index.docker.io/library/python:3.12
	Digest  string    `json:"digest" yaml:"digest"`   // image manifest digest, "sha256:..."
	Size    int64     `json:"size" yaml:"size"`       // unpacked bytes
	Layers  []string  `json:"layers" yaml:"layers"`   // diffIDs, lowest first
	Created time.Time `json:"created" yaml:"created"` // from the image config
	Pulled  time.Time `json:"pulled" yaml:"pulled"`   // when msbd recorded the reference with this content
	InUse   int       `json:"inUse" yaml:"inUse"`     // sandboxes using the image
}

// PullProgress reports a layer download of PullImage. Done grows; Complete is set
// once the layer is in msbd's store (at once, with Done = Total, for a layer it held).
type PullProgress struct {
	Layer    string `json:"layer"` // digest of the compressed layer, "sha256:..."
	Total    int64  `json:"total"`
	Done     int64  `json:"done"`
	Complete bool   `json:"complete"`
}

// Pull failure reasons, in APIError.Reason of PullImage's error.
const (
	ReasonPullFailed   = "PullFailed"   // the registry or the transfer failed (Status 502)
	ReasonInvalidImage = "InvalidImage" // msb refuses the image's content (Status 422)
	ReasonNotPresent   = "NotPresent"   // policy Never and msbd does not hold the image (Status 404)
)

// NetworkDecision is one allow or deny of a sandbox's network traffic, as
// msbd's DNS filter and egress proxy made it (GET .../sandboxes/NAME/networklog,
// one JSON object per line).
type NetworkDecision struct {
	Time time.Time `json:"time"`
	// Kind is "dns" (a name asked of the DNS filter) or "tcp" (a connection).
	Kind string `json:"kind"`
	// Name is the DNS name, or the SNI / Host of a connection.
	Name    string `json:"name,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Port    uint16 `json:"port,omitempty"`
	Allowed bool   `json:"allowed"`
	// Rule is the rule that allowed it; Reason why it was denied.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
}
