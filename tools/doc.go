// Package tools declares nefia's MCP tools (nefia.mtls.*): their names,
// descriptions, input and output schemas and annotations, and handlers that
// translate between MCP arguments and the pki package. It also holds the
// reports the CLI and the tools share, so both say the same thing.
package tools
