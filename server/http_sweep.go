package server

import "time"

// SweepEvery is how often the gateway's revocation poll has the HTTP
// transport end sessions nobody uses any more (SweepSessions).
const SweepEvery = 5 * time.Second

// SweepSessions ends every HTTP session unused for longer than
// SessionIdleTTL or whose certificate has expired, and returns how many.
// bindSession also ends idle sessions, but only when a session is created:
// without a sweep, an abandoned session (a client that never sent DELETE)
// holds what hangs on it, such as a per_client upstream session and its
// slot under max_sessions_per_client, until someone else initializes one.
// The gateway calls it from its revocation poll, every SweepEvery, so such
// a session ends within SessionIdleTTL plus SweepEvery of its last use.
func (h *HTTPTransport) SweepSessions() int {
	now := h.opts.Clock.Now()
	var stale []string
	h.mu.Lock()
	for sid, b := range h.sessions {
		if now.Sub(b.lastUsed) > h.opts.SessionIdleTTL || (!b.notAfter.IsZero() && !now.Before(b.notAfter)) {
			stale = append(stale, sid)
		}
	}
	h.mu.Unlock()
	for _, sid := range stale {
		h.endSession(sid)
	}
	if len(stale) > 0 {
		h.log.Debug("http sessions swept", "count", len(stale))
	}
	return len(stale)
}
