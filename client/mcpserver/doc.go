// Package mcpserver is msb's Model Context Protocol server: the sandbox_*
// tools an AI agent uses to create sandboxes, run commands and move files in
// them. It is a client of the msbd API only (msb.dev/msb/client), so both
// `msbctl mcp` (stdio) and `msbd --mcp-listen` (streamable HTTP) serve the
// same tools from it.
//
// The agent gets exactly what the tools allow: Sandboxes with an image,
// command, literal env, labels, resources and a lifetime. No hostPath
// volumes, ports, isolation choices or Secret references, and no tool
// creates Secrets or NetworkPolicies: those stay with the operator's
// manifests, which select MCP sandboxes by label.
package mcpserver
