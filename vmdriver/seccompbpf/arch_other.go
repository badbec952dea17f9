//go:build !amd64 && !arm64

package seccompbpf

// native is nil: there is no syscall table for this GOARCH, and the seccomp_data
// word order in the compiler assumes a 64-bit little-endian architecture.
var native *arch
