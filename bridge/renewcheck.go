package bridge

import (
	"encoding/json"
	"sync"
)

// renewToolName is the tool the renewal calls. A custom mcp.policy agent
// rule that forgets it leaves the bridge unable to renew, which surfaces
// only when the certificate expires; the bridge says so as soon as the
// gateway's tools/list shows it (issue 16 item 1).
const renewToolName = "nefia.mtls.renew"

// MsgRenewDenied is the warning logged once when renewal is on and the
// gateway does not list the renewal tool for this certificate.
const MsgRenewDenied = "the gateway does not list " + renewToolName + " for this certificate, so it cannot be renewed and will stop working when it expires: add " + renewToolName + " to the mcp.policy rule that matches it, or pass --no-renew"

// renewCheck watches the client's first tools/list exchange (the bridge
// sees the very list the client asks for, so it asks nothing itself).
type renewCheck struct {
	mu      sync.Mutex
	pending map[string]bool // ids of tools/list requests without a cursor
	done    bool            // one verdict is enough
}

// noteToolsList remembers a tools/list request whose answer holds the
// decision.
func (b *bridge) noteToolsList(m message, line []byte) {
	if b.opts.Renew == nil || m.method != "tools/list" {
		return
	}
	var req struct {
		Params struct {
			Cursor *string `json:"cursor"`
		} `json:"params"`
	}
	if json.Unmarshal(line, &req) != nil || req.Params.Cursor != nil {
		return // a later page: the first one decides
	}
	rc := &b.renewCheck
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.done {
		return
	}
	if rc.pending == nil {
		rc.pending = map[string]bool{}
	}
	rc.pending[m.id] = true
}

// checkToolsList inspects the answer to a noted tools/list and warns once
// when the renewal tool is missing from a complete list.
func (b *bridge) checkToolsList(m message, line []byte) {
	rc := &b.renewCheck
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.done || !rc.pending[m.id] {
		return
	}
	delete(rc.pending, m.id)
	if m.failed {
		return
	}
	var resp struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
			NextCursor string `json:"nextCursor"`
		} `json:"result"`
	}
	if json.Unmarshal(line, &resp) != nil {
		return
	}
	for _, t := range resp.Result.Tools {
		if t.Name == renewToolName {
			rc.done = true
			return
		}
	}
	if resp.Result.NextCursor != "" {
		return // it may be on a later page; do not guess
	}
	rc.done = true
	b.log.Warn(MsgRenewDenied)
}
