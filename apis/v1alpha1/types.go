// Package v1alpha1 holds msb's resource types (Sandbox, NetworkPolicy, Secret),
// their defaulting and validation, and strict YAML/JSON decoding with line numbers.
package v1alpha1

import (
	"time"
)

// Group and Version name the API; APIVersion is what manifests carry.
const (
	Group      = "msb.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// Kinds.
const (
	KindSandbox       = "Sandbox"
	KindNetworkPolicy = "NetworkPolicy"
	KindSecret        = "Secret"
	KindEvent         = "Event"
)

// TypeMeta names the kind of an object, as in Kubernetes.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty" yaml:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty" yaml:"kind,omitempty"`
}

// ObjectMeta is the metadata every stored object carries. Fields other than
// name, namespace, labels and annotations are set by the server.
type ObjectMeta struct {
	Name              string            `json:"name" yaml:"name"`
	Namespace         string            `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty" yaml:"annotations,omitempty"`
	UID               string            `json:"uid,omitempty" yaml:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty" yaml:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty" yaml:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty" yaml:"creationTimestamp,omitempty"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp,omitempty" yaml:"deletionTimestamp,omitempty"`
	Finalizers        []string          `json:"finalizers,omitempty" yaml:"finalizers,omitempty"`
}

// ConditionStatus is True, False or Unknown.
type ConditionStatus string

const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// Condition types every tool can wait on.
const (
	ConditionReady      = "Ready"
	ConditionImageReady = "ImageReady"
)

// Condition is one observation about an object, Kubernetes style.
type Condition struct {
	Type               string          `json:"type" yaml:"type"`
	Status             ConditionStatus `json:"status" yaml:"status"`
	Reason             string          `json:"reason,omitempty" yaml:"reason,omitempty"`
	Message            string          `json:"message,omitempty" yaml:"message,omitempty"`
	LastTransitionTime time.Time       `json:"lastTransitionTime" yaml:"lastTransitionTime"`
}

// ---- Sandbox ----

// Sandbox is one isolated unit running untrusted code.
type Sandbox struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ObjectMeta    `json:"metadata" yaml:"metadata"`
	Spec     SandboxSpec   `json:"spec" yaml:"spec"`
	Status   SandboxStatus `json:"status,omitempty" yaml:"status,omitempty"`
}

// PullPolicy says when an image is fetched.
type PullPolicy string

const (
	PullIfNotPresent PullPolicy = "IfNotPresent"
	PullAlways       PullPolicy = "Always"
	PullNever        PullPolicy = "Never"
)

// RestartPolicy says whether a finished sandbox command is started again.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "Always"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartNever     RestartPolicy = "Never"
)

// OperatingMode is Running or Suspended.
type OperatingMode string

const (
	ModeRunning   OperatingMode = "Running"
	ModeSuspended OperatingMode = "Suspended"
)

// Isolation chooses the backend: auto picks microvm when KVM and libkrun exist.
type Isolation string

const (
	IsolationAuto      Isolation = "auto"
	IsolationMicroVM   Isolation = "microvm"
	IsolationContainer Isolation = "container"
)

// SandboxSpec is the desired state of a Sandbox.
type SandboxSpec struct {
	Image           string               `json:"image" yaml:"image"`
	ImagePullPolicy PullPolicy           `json:"imagePullPolicy,omitempty" yaml:"imagePullPolicy,omitempty"`
	Command         []string             `json:"command,omitempty" yaml:"command,omitempty"`
	Args            []string             `json:"args,omitempty" yaml:"args,omitempty"`
	WorkingDir      string               `json:"workingDir,omitempty" yaml:"workingDir,omitempty"`
	Env             []EnvVar             `json:"env,omitempty" yaml:"env,omitempty"`
	Resources       ResourceRequirements `json:"resources,omitempty" yaml:"resources,omitempty"`
	Ports           []Port               `json:"ports,omitempty" yaml:"ports,omitempty"`
	Volumes         []Volume             `json:"volumes,omitempty" yaml:"volumes,omitempty"`
	RestartPolicy   RestartPolicy        `json:"restartPolicy,omitempty" yaml:"restartPolicy,omitempty"`
	OperatingMode   OperatingMode        `json:"operatingMode,omitempty" yaml:"operatingMode,omitempty"`
	Lifecycle       Lifecycle            `json:"lifecycle,omitempty" yaml:"lifecycle,omitempty"`
	Isolation       Isolation            `json:"isolation,omitempty" yaml:"isolation,omitempty"`
}

// EnvVar is a literal value or a reference to a Secret key.
type EnvVar struct {
	Name      string        `json:"name" yaml:"name"`
	Value     string        `json:"value,omitempty" yaml:"value,omitempty"`
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty" yaml:"valueFrom,omitempty"`
}

// EnvVarSource points at a Secret key; the sandbox sees a placeholder, never the value.
type EnvVarSource struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty" yaml:"secretKeyRef,omitempty"`
}

// SecretKeySelector names one key of a Secret in the same namespace.
type SecretKeySelector struct {
	Name string `json:"name" yaml:"name"`
	Key  string `json:"key" yaml:"key"`
}

// ResourceRequirements are hard limits for the sandbox. Quantities use the
// Kubernetes notation (512Mi, 1G, 0.5 for cpus, or 500m).
type ResourceRequirements struct {
	CPUs   Quantity `json:"cpus,omitempty" yaml:"cpus,omitempty"`
	Memory Quantity `json:"memory,omitempty" yaml:"memory,omitempty"`
	PIDs   int64    `json:"pids,omitempty" yaml:"pids,omitempty"`
	// Disk bounds the sandbox's writable layer and its agent directory
	// together (writes past it fail with ENOSPC inside). Unset: msbd's
	// --default-disk; "0": unlimited.
	Disk Quantity `json:"disk,omitempty" yaml:"disk,omitempty"`
}

// Port publishes a sandbox port on the host.
type Port struct {
	ContainerPort int32  `json:"containerPort" yaml:"containerPort"`
	HostPort      int32  `json:"hostPort,omitempty" yaml:"hostPort,omitempty"`
	HostIP        string `json:"hostIP,omitempty" yaml:"hostIP,omitempty"`
	Protocol      string `json:"protocol,omitempty" yaml:"protocol,omitempty"`
}

// Volume bind-mounts a host path into the sandbox.
type Volume struct {
	Name      string `json:"name,omitempty" yaml:"name,omitempty"`
	HostPath  string `json:"hostPath" yaml:"hostPath"`
	MountPath string `json:"mountPath" yaml:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty" yaml:"readOnly,omitempty"`
}

// Lifecycle bounds how long a sandbox lives.
type Lifecycle struct {
	TTL          *Duration  `json:"ttl,omitempty" yaml:"ttl,omitempty"`
	ShutdownTime *time.Time `json:"shutdownTime,omitempty" yaml:"shutdownTime,omitempty"`
}

// Sandbox phases.
type SandboxPhase string

const (
	PhasePending   SandboxPhase = "Pending"
	PhaseRunning   SandboxPhase = "Running"
	PhaseSucceeded SandboxPhase = "Succeeded"
	PhaseFailed    SandboxPhase = "Failed"
	PhaseSuspended SandboxPhase = "Suspended"
)

// SandboxStatus is the observed state of a Sandbox.
type SandboxStatus struct {
	ObservedGeneration int64        `json:"observedGeneration,omitempty" yaml:"observedGeneration,omitempty"`
	Phase              SandboxPhase `json:"phase,omitempty" yaml:"phase,omitempty"`
	Conditions         []Condition  `json:"conditions,omitempty" yaml:"conditions,omitempty"`
	Driver             string       `json:"driver,omitempty" yaml:"driver,omitempty"`
	Isolation          Isolation    `json:"isolation,omitempty" yaml:"isolation,omitempty"`
	// NetworkPolicies names the NetworkPolicies selecting the sandbox: the
	// union of their rules is what it may reach (nothing when empty).
	NetworkPolicies []string   `json:"networkPolicies,omitempty" yaml:"networkPolicies,omitempty"`
	IP              string     `json:"ip,omitempty" yaml:"ip,omitempty"`
	StartedAt       *time.Time `json:"startedAt,omitempty" yaml:"startedAt,omitempty"`
	FinishedAt      *time.Time `json:"finishedAt,omitempty" yaml:"finishedAt,omitempty"`
	ExpiresAt       *time.Time `json:"expiresAt,omitempty" yaml:"expiresAt,omitempty"`
	ExitCode        *int32     `json:"exitCode,omitempty" yaml:"exitCode,omitempty"`
	RestartCount    int32      `json:"restartCount,omitempty" yaml:"restartCount,omitempty"`
	ImageDigest     string     `json:"imageDigest,omitempty" yaml:"imageDigest,omitempty"`
	PID             int        `json:"pid,omitempty" yaml:"pid,omitempty"`
	// SpecHash identifies the runtime spec the sandbox was started with, so a
	// spec change restarts it and a no-op update does not.
	SpecHash string `json:"specHash,omitempty" yaml:"specHash,omitempty"`
	// TerminationReason says how the last run ended, with ExitCode:
	// Completed (exit 0), Error, or OOMKilled (killed by the memory limit,
	// unlike a command that exited 137 by itself).
	TerminationReason string `json:"terminationReason,omitempty" yaml:"terminationReason,omitempty"`
	// LogDroppedBytes is how much of the sandbox's output the log size cap
	// has dropped (the oldest output goes first).
	LogDroppedBytes int64 `json:"logDroppedBytes,omitempty" yaml:"logDroppedBytes,omitempty"`
	// LastRestart says when and why msbd last replaced a run by a fresh one
	// that the restart policy did not ask for: a spec change, or a restart
	// requested with AnnotationRestartedAt (msbctl restart).
	LastRestart *RestartRecord `json:"lastRestart,omitempty" yaml:"lastRestart,omitempty"`
	// RestartedAt is the value of AnnotationRestartedAt the current run
	// answers; a different value asks for a fresh run.
	RestartedAt string `json:"restartedAt,omitempty" yaml:"restartedAt,omitempty"`
	// Disk is the use of the sandbox's bounded disk (spec.resources.disk)
	// as last observed; nil when it has none.
	Disk *DiskStatus `json:"disk,omitempty" yaml:"disk,omitempty"`
}

// DiskStatus is a bounded disk's use, in bytes (used rounded up to 1/256
// of the limit, at least 1 MiB, so small writes do not rewrite the status).
type DiskStatus struct {
	UsedBytes  int64 `json:"usedBytes" yaml:"usedBytes"`
	LimitBytes int64 `json:"limitBytes" yaml:"limitBytes"`
}

// RestartRecord is one restart msbd made on its own account.
type RestartRecord struct {
	Time   time.Time `json:"time" yaml:"time"`
	Reason string    `json:"reason" yaml:"reason"` // SpecChanged | RestartRequested
}

// AnnotationRestartedAt on a Sandbox asks for a fresh run of its spec: when
// its value differs from status.restartedAt, msbd stops the sandbox (if it
// runs) and starts it again, counting it in status.restartCount. msbctl
// restart sets it to the current time, as kubectl rollout restart does.
const AnnotationRestartedAt = "msb.dev/restartedAt"

// LabelApplySet names the apply set an object belongs to: msbctl apply
// --prune and msbd --manifests-dir delete the members of their set that
// their manifests no longer hold, and never an object without the label.
const LabelApplySet = "msb.dev/applyset"

// AnnotationSource, set by msbd --manifests-dir, names the manifest file (and
// line) an object is kept applied from.
const AnnotationSource = "msb.dev/source"

// ---- NetworkPolicy ----

// NetworkPolicy allows egress from the sandboxes it selects; everything else is denied.
type NetworkPolicy struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ObjectMeta          `json:"metadata" yaml:"metadata"`
	Spec     NetworkPolicySpec   `json:"spec" yaml:"spec"`
	Status   NetworkPolicyStatus `json:"status,omitempty" yaml:"status,omitempty"`
}

// NetworkPolicySpec selects sandboxes and lists allowed egress.
type NetworkPolicySpec struct {
	SandboxSelector LabelSelector `json:"sandboxSelector" yaml:"sandboxSelector"`
	Egress          []EgressRule  `json:"egress,omitempty" yaml:"egress,omitempty"`
}

// LabelSelector matches labels exactly (all pairs must match).
type LabelSelector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty" yaml:"matchLabels,omitempty"`
}

// EgressRule allows traffic to any of To on any of Ports (all ports when empty).
type EgressRule struct {
	To    []EgressPeer `json:"to" yaml:"to"`
	Ports []PolicyPort `json:"ports,omitempty" yaml:"ports,omitempty"`
}

// EgressPeer is exactly one of a domain (exact or "*.suffix"), a CIDR or a group.
type EgressPeer struct {
	Domain string `json:"domain,omitempty" yaml:"domain,omitempty"`
	CIDR   string `json:"cidr,omitempty" yaml:"cidr,omitempty"`
	Group  string `json:"group,omitempty" yaml:"group,omitempty"`
}

// Address groups a peer may name.
var EgressGroups = []string{"public", "private", "loopback", "link-local", "metadata", "host"}

// PolicyPort is a port (and protocol, TCP by default).
type PolicyPort struct {
	Port     int32  `json:"port" yaml:"port"`
	Protocol string `json:"protocol,omitempty" yaml:"protocol,omitempty"`
}

// NetworkPolicyStatus is observed state.
type NetworkPolicyStatus struct {
	ObservedGeneration int64 `json:"observedGeneration,omitempty" yaml:"observedGeneration,omitempty"`
	// SelectedSandboxes is how many Sandboxes of its namespace it selects.
	SelectedSandboxes int32       `json:"selectedSandboxes" yaml:"selectedSandboxes"`
	Conditions        []Condition `json:"conditions,omitempty" yaml:"conditions,omitempty"`
}

// ---- Secret ----

// Secret holds credentials that are substituted at the network layer and never
// enter a sandbox. Values are write-only: stored encrypted and never printed.
type Secret struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ObjectMeta   `json:"metadata" yaml:"metadata"`
	Spec     SecretSpec   `json:"spec" yaml:"spec"`
	Status   SecretStatus `json:"status,omitempty" yaml:"status,omitempty"`
}

// Where a secret value may be substituted.
const (
	SubstituteHeaders   = "headers"
	SubstituteBasicAuth = "basicAuth"
	SubstituteQuery     = "query"
	SubstituteBody      = "body"
)

// SecretSpec holds values and where they may go. StringData holds plain values;
// Data holds base64 values as in Kubernetes. Both are redacted on output.
type SecretSpec struct {
	StringData   map[string]string `json:"stringData,omitempty" yaml:"stringData,omitempty"`
	Data         map[string]string `json:"data,omitempty" yaml:"data,omitempty"`
	AllowedHosts []string          `json:"allowedHosts,omitempty" yaml:"allowedHosts,omitempty"`
	SubstituteIn []string          `json:"substituteIn,omitempty" yaml:"substituteIn,omitempty"`
}

// SecretStatus lists the keys present (never the values) and a digest so
// tools can tell a value changed without seeing it.
type SecretStatus struct {
	ObservedGeneration int64    `json:"observedGeneration,omitempty" yaml:"observedGeneration,omitempty"`
	Keys               []string `json:"keys,omitempty" yaml:"keys,omitempty"`
}

// Redacted is what every output shows in place of a secret value.
const Redacted = "<redacted>"

// ---- Event ----

// Event records something that happened to an object, Kubernetes style.
// Repeats of the same (object, type, reason, message) bump Count and LastSeen.
type Event struct {
	TypeMeta       `json:",inline" yaml:",inline"`
	Metadata       ObjectMeta      `json:"metadata" yaml:"metadata"`
	InvolvedObject ObjectReference `json:"involvedObject" yaml:"involvedObject"`
	Type           string          `json:"type" yaml:"type"` // Normal | Warning
	Reason         string          `json:"reason" yaml:"reason"`
	Message        string          `json:"message" yaml:"message"`
	Count          int32           `json:"count" yaml:"count"`
	FirstSeen      time.Time       `json:"firstTimestamp" yaml:"firstTimestamp"`
	LastSeen       time.Time       `json:"lastTimestamp" yaml:"lastTimestamp"`
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// ObjectReference points at an object.
type ObjectReference struct {
	Kind      string `json:"kind" yaml:"kind"`
	Namespace string `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Name      string `json:"name" yaml:"name"`
	UID       string `json:"uid,omitempty" yaml:"uid,omitempty"`
}

// List is what list endpoints return; Items are raw objects of one kind.
type List[T any] struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ListMeta `json:"metadata" yaml:"metadata"`
	Items    []T      `json:"items" yaml:"items"`
}

// ListMeta carries the revision a list was read at, to resume a watch from.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty" yaml:"resourceVersion,omitempty"`
}
