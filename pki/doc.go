// Package pki owns nefia's certificates and the files that hold them: the
// private root CA, the gateway's server certificate, client issuance (from a
// fresh key or a caller's CSR), the inventory of issued certificates, the
// revocation store and the revocation checker used on every handshake.
//
// It knows nothing of MCP. The CLI and the MCP tools both call it, so the two
// can never disagree about what a valid certificate or a revoked serial is.
//
// Every state file is written atomically (temp file, fsync, rename, directory
// fsync) and every read-modify-write holds an exclusive lock on the state
// directory, so a crash or two concurrent writers (the CLI and a running
// gateway) never lose or corrupt an update. A state file that cannot be parsed
// is an error naming the file; it is never silently replaced.
package pki
