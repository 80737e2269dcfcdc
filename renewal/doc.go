// Package renewal is the agent's side of nefia.mtls.renew: it makes a new
// P-256 key and a CSR over it, asks a running gateway to sign it over mutual
// TLS with the certificate being renewed, checks the answer, and replaces
// the key and certificate files so that a reader never sees a mismatched
// pair. Both 'nefia mtls renew' and the bridge's automatic renewal ('nefia
// mcp connect') use it, so the two cannot drift apart (issue 13 items 1
// and 2).
package renewal
