// Package audit writes and verifies nefia's audit trail: one JSON object per
// line (JSONL), one line per event, in <state dir>/audit/audit.jsonl.
//
// Each record carries prev_hash, the hash of the record before it, and hash,
// an HMAC-SHA256 (key in audit/audit.key, generated once, 0600) over
// prev_hash and the record's own bytes. Editing, deleting, reordering or
// inserting a line, or forging one without the key, breaks the chain at that
// line, and Verify names it. The first record chains from Genesis; after a
// restart or a rotation the chain continues from the last record written.
//
// The trail is separate from operational logging: a fixed schema,
// append-only files, no keys, no tokens and no PEM bodies (Redact).
//
// Records of state-changing actions are fsynced before Append returns; others
// are written at once and fsynced in groups, so a crash of the machine loses
// at most the last group of read-only events, and a crash of the process
// loses nothing that was written.
package audit
