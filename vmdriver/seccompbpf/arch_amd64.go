package seccompbpf

// native is the architecture Compile builds filters for.
var native = archAMD64
