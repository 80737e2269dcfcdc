// Package load is nefia-bench's client side: TLS 1.3 connections that
// present a client certificate and speak newline-delimited JSON-RPC, driven
// in closed loops by a fixed number of workers for a fixed time.
//
// The hot loops avoid work a real client would not need to do twice: requests
// are built by appending to a reused buffer, and responses are checked by
// their id and error markers without decoding the JSON (the client shares
// the machine's two cores with the server it measures, so every microsecond
// it spends is taken from the server). Check validates one full response
// with encoding/json, so a smoke run still proves the results are right.
package load
