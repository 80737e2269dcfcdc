package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Events of certificate renewal (issue 13): a caller renewing its own
// client certificate, and a new server certificate under the existing CA.
const (
	EventRenew       = "mtls.renew"
	EventRenewServer = "mtls.renew_server"
)

// Event names.
const (
	EventToolCall           = "tool_call"
	EventInit               = "mtls.init"
	EventIssueClient        = "mtls.issue_client"
	EventRevoke             = "mtls.revoke"
	EventConnectionOpen     = "connection_open"
	EventConnectionClose    = "connection_close"
	EventConnectionRejected = "connection_rejected"
	// EventDisconnect: the local operator ended live connections through
	// the gateway's control socket (args: id or serial; result: closed).
	EventDisconnect = "gateway.disconnect"
	// EventConnectionRejectedSuppressed summarizes, per remote address,
	// refused connections a rate limit kept from being recorded one by one:
	// result.suppressed is their number, result.by_reason the count of each
	// reason.
	EventConnectionRejectedSuppressed = "connection_rejected_suppressed"
	// EventToolCallSuppressed summarizes, per certificate, denied and
	// failed tool calls a rate limit kept from being recorded one by one:
	// result.suppressed is their number, result.by_outcome the count of
	// each outcome.
	EventToolCallSuppressed = "tool_call_suppressed"
	// EventResourceRead and EventPromptGet are a client's resources/read
	// and prompts/get of what an upstream offers, recorded like tool_call
	// (tool is the policy subject, <upstream>.resource:<uri> or
	// <upstream>.prompt:<name>; issue 12 item 2).
	EventResourceRead = "resource_read"
	EventPromptGet    = "prompt_get"
	// EventComplete is a client's completion/complete of an upstream
	// prompt's argument or resource template's variable: a read-like
	// request forwarded with the caller's identity, audited like a read.
	EventComplete = "completion"
	// EventRecovered records that Open cut a torn last line (a crash in the
	// middle of a write) off the trail before continuing it.
	EventRecovered = "audit.recovered"
)

// Outcomes.
const (
	OutcomeOK      = "ok"
	OutcomeError   = "error"
	OutcomeDenied  = "denied"
	OutcomeStarted = "started" // written before a state-changing action: no audit, no action
)

// Genesis is the prev_hash of the first record of a trail.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Agent is who caused an event, as far as it is known.
type Agent struct {
	Name   string `json:"name,omitempty"`
	Serial string `json:"serial,omitempty"`
	Role   string `json:"role,omitempty"`
	// Unverified marks a name and serial read from a certificate whose
	// chain did not verify against the CA (a refused handshake): anyone can
	// put anything there, so they say who the peer claimed to be, not who
	// it is.
	Unverified bool `json:"unverified,omitempty"`
}

// Record is one line of the trail. Append fills in ID, Time, PrevHash and
// Hash; callers fill in the rest. Decision is the authorization decision a
// tool call was subjected to, in one line: the rule that allowed it or why it
// was denied, recorded as enforced, never recomputed.
type Record struct {
	ID         string         `json:"id"`
	Time       time.Time      `json:"time"`
	Event      string         `json:"event"`
	Tool       string         `json:"tool,omitempty"`
	Agent      *Agent         `json:"agent,omitempty"`
	SessionID  string         `json:"session_id,omitempty"`
	RemoteAddr string         `json:"remote_addr,omitempty"`
	Transport  string         `json:"transport,omitempty"`
	Args       map[string]any `json:"args,omitempty"`
	Result     map[string]any `json:"result,omitempty"`
	Outcome    string         `json:"outcome,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Error      string         `json:"error,omitempty"`
	DurationMS float64        `json:"duration_ms,omitempty"`
	Decision   string         `json:"decision,omitempty"` // authorization enforced on a tool call (policy.Decision.String)
	Upstream   string         `json:"upstream,omitempty"` // the mcp.upstreams entry a proxied tool call went to (issue 12 item 6)
	// GatewayID is the gateway (mcp.gateway_id) whose trail holds the
	// record: several gateways share one store but each keeps its own
	// chain (issue 15 item 4). Filled in by Append from Options.GatewayID.
	GatewayID string `json:"gateway_id,omitempty"`
	PrevHash  string `json:"prev_hash"`
	Hash      string `json:"hash,omitempty"`
}

// hashSuffix is how every line ends: the hash is the last field, so the
// bytes it covers are exactly the line up to it.
const hashSuffix = `,"hash":"`

// seal encodes r (whose Hash must be empty) as one line, hash included,
// without the newline. The HMAC covers prev_hash and the exact bytes of the
// record without its hash, so verification needs no canonicalization that
// could disagree with the writer.
func seal(key []byte, r *Record) ([]byte, error) {
	r.Hash = ""
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encode record: %w", err)
	}
	r.Hash = mac(key, r.PrevHash, body)
	line := make([]byte, 0, len(body)+len(hashSuffix)+len(r.Hash)+2)
	line = append(line, body[:len(body)-1]...) // drop the closing brace
	line = append(line, hashSuffix...)
	line = append(line, r.Hash...)
	line = append(line, '"', '}')
	return line, nil
}

// unseal parses a line and checks its HMAC; it returns the record and the
// exact body the hash covers.
func unseal(key []byte, line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("%w: not a JSON object (torn or edited): %v", ErrBroken, err)
	}
	want := hashSuffix + r.Hash + `"}`
	if len(r.Hash) != 64 || len(line) < len(want) || string(line[len(line)-len(want):]) != want {
		return r, fmt.Errorf("%w: hash missing or not the last field (edited)", ErrBroken)
	}
	body := make([]byte, 0, len(line))
	body = append(body, line[:len(line)-len(want)]...)
	body = append(body, '}')
	if !hmac.Equal([]byte(mac(key, r.PrevHash, body)), []byte(r.Hash)) {
		return r, fmt.Errorf("%w: hash does not match its contents (edited, forged, or another key)", ErrBroken)
	}
	return r, nil
}

func mac(key []byte, prev string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(prev))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// ErrBroken marks a trail whose chain does not hold.
var ErrBroken = errors.New("audit: chain broken")

// ErrUnavailable marks a trail that cannot be written: a state-changing action
// must be refused.
var ErrUnavailable = errors.New("audit trail unavailable")
