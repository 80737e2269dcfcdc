package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/policy"
)

// auditor puts every tool call, every connection event and every state
// change on the audit trail. It is an observe.Observer: tool_call records
// come from the call events callHooks reports (every call, those that never
// reach a handler included), connection records from the gateway's events.
//
// State-changing tools additionally record their event (mtls.issue_client,
// ...) durably before they act, and are refused if it cannot be written:
// the operation layer (package ops) does that for the tools and the CLI
// alike, on the trail tools.Deps.Audit.
type auditor struct {
	trail *audit.Logger
	log   *slog.Logger
	// refusals rate-limits connection_rejected records; summary is armed
	// by the first refusal it suppresses and writes the window's summary.
	refusals  *refusalLimiter
	summaryMu sync.Mutex
	summary   *time.Timer
	// calls rate-limits the records of denied and failed tool calls per
	// certificate; callSummary (under summaryMu) writes their summary.
	calls       *callLimiter
	callSummary *time.Timer
}

func newAuditor(trail *audit.Logger, log *slog.Logger) *auditor {
	return &auditor{trail: trail, log: log, refusals: newRefusalLimiter(time.Now), calls: newCallLimiter(time.Now)}
}

// close writes the summary of refusals suppressed so far; the gateway calls
// it when it stops serving.
func (a *auditor) close() {
	a.summaryMu.Lock()
	if a.summary != nil {
		a.summary.Stop()
		a.summary = nil
	}
	if a.callSummary != nil {
		a.callSummary.Stop()
		a.callSummary = nil
	}
	a.summaryMu.Unlock()
	a.summarize(a.refusals.flush())
	a.summarizeCalls(a.calls.flush())
}

// Call implements observe.Observer: one tool_call record per call,
// batched (a state change's durable records are the event pair its
// operation writes, package ops, fsynced before the result goes out).
//
// Denied and failed calls are rate-limited per certificate (see
// callLimiter), and a denied call's arguments are recorded as a digest: the
// caller chose them, the call did nothing, and 15 KB of them per call let a
// peer fill the disk.
func (a *auditor) Call(e observe.CallEvent) {
	args := e.Args
	if e.Outcome != audit.OutcomeOK {
		ok, ended := a.calls.allow(e.Agent.Serial, e.Agent.Name, e.Outcome)
		a.summarizeCalls(ended)
		if !ok {
			a.armCallSummary()
			return
		}
		if e.Outcome == audit.OutcomeDenied {
			args = audit.Digest(args)
		}
	}
	r := audit.Record{Event: callEvent(e.Method), Tool: e.Tool, Args: audit.Redact(args),
		Outcome: e.Outcome, Error: e.Error, Decision: e.Decision, Upstream: e.Upstream, SessionID: e.Agent.SessionID,
		DurationMS: float64(e.Duration.Microseconds()) / 1000}
	if e.Known {
		e.Agent.Stamp(&r)
	}
	if err := a.trail.Append(r, false); err != nil {
		a.log.Error("tool call not audited", "tool", audit.Clip(r.Tool, maxUnverifiedName), "error", err)
	}
}

// armCallSummary makes sure the window's suppressed calls are summarized
// when it ends, even if no other failed call comes to end it.
func (a *auditor) armCallSummary() {
	a.summaryMu.Lock()
	defer a.summaryMu.Unlock()
	if a.callSummary == nil {
		a.callSummary = time.AfterFunc(callWindow, func() {
			a.summaryMu.Lock()
			a.callSummary = nil
			a.summaryMu.Unlock()
			a.summarizeCalls(a.calls.flush())
		})
	}
}

// summarizeCalls writes one tool_call_suppressed record per certificate.
func (a *auditor) summarizeCalls(counts []suppressedCount) {
	for _, c := range counts {
		byOutcome := make(map[string]any, len(c.byReason))
		for k, v := range c.byReason {
			byOutcome[k] = v
		}
		r := audit.Record{Event: audit.EventToolCallSuppressed, Outcome: audit.OutcomeDenied,
			Agent:  &audit.Agent{Name: c.addr, Serial: c.serial},
			Reason: fmt.Sprintf("%d denied or failed tool calls not recorded one by one (rate limit)", c.total),
			Result: map[string]any{"suppressed": c.total, "by_outcome": byOutcome}}
		a.write(r)
	}
}

// Connection implements observe.Observer. Refusals go through the rate
// limit (refused); admitted connections' events are written as they come.
func (a *auditor) Connection(e observe.ConnEvent) {
	switch e.Kind {
	case observe.ConnRefused:
		a.refused(refusal{remote: e.Remote, reason: e.Reason, who: e.Agent, unverified: e.Unverified, err: e.Err})
	case observe.ConnOpened:
		a.write(connectionRecord(audit.EventConnectionOpen, e.Agent, e.Remote, e.Transport, "", nil))
	case observe.ConnClosed:
		a.write(connectionRecord(audit.EventConnectionClose, e.Agent, e.Remote, e.Transport, e.Reason, e.Err))
	}
}

// enforcedDecision returns the authorization decision recorded for the call
// of tool in ctx's request; ok is false for a call that never reached
// authorization (unknown tool, invalid arguments). A decision for another
// tool means a transport shared one decision slot between requests: it is
// ignored, and said, rather than recorded against the wrong call.
func enforcedDecision(ctx context.Context, log *slog.Logger, tool string) (policy.Decision, bool) {
	d, ok := policy.DecisionFromContext(ctx)
	if ok && d.Tool != tool {
		log.Error("authorization decision is for another call; a transport shares decision slots",
			"tool", audit.Clip(tool, maxUnverifiedName), "decided", d.Tool)
		return policy.Decision{}, false
	}
	return d, ok
}

// refusal is a refused connection: who is nil when no certificate was
// presented, and unverified when the one presented did not verify.
type refusal struct {
	remote, reason string
	who            *identity.Agent
	unverified     bool
	err            error
}

// refused records a refused connection, unless the rate limit for its
// address (or for all refusals) suppresses it: then it is counted for the
// window's summary.
func (a *auditor) refused(f refusal) {
	serial := ""
	if f.who != nil {
		serial = f.who.Serial
	}
	ok, ended := a.refusals.allow(f.remote, f.reason, serial, f.who != nil && !f.unverified)
	a.summarize(ended)
	if !ok {
		a.summaryMu.Lock()
		if a.summary == nil {
			a.summary = time.AfterFunc(refusalWindow, func() {
				a.summaryMu.Lock()
				a.summary = nil
				a.summaryMu.Unlock()
				a.summarize(a.refusals.flush())
			})
		}
		a.summaryMu.Unlock()
		return
	}
	r := connectionRecord(audit.EventConnectionRejected, f.who, f.remote, "", f.reason, f.err)
	if r.Agent != nil {
		r.Agent.Unverified = f.unverified
	}
	a.write(r)
}

// summarize writes one connection_rejected_suppressed record per address
// of a window's suppressed refusals.
func (a *auditor) summarize(counts []suppressedCount) {
	for _, c := range counts {
		byReason := make(map[string]any, len(c.byReason))
		for k, v := range c.byReason {
			byReason[k] = v
		}
		r := audit.Record{Event: audit.EventConnectionRejectedSuppressed, RemoteAddr: c.addr, Outcome: audit.OutcomeDenied,
			Reason: c.reason(), Result: map[string]any{"suppressed": c.total, "by_reason": byReason}}
		if c.serial != "" {
			r.Agent = &audit.Agent{Serial: c.serial}
		}
		a.write(r)
	}
}

func connectionRecord(event string, agent *identity.Agent, remote, transport, reason string, err error) audit.Record {
	if transport == "" {
		transport = identity.TransportStream
	}
	r := audit.Record{Event: event, RemoteAddr: remote, Reason: reason, Transport: transport}
	if agent != nil {
		agent.Stamp(&r)
		if r.RemoteAddr == "" {
			r.RemoteAddr = remote
		}
		if r.Transport == "" {
			r.Transport = transport
		}
	}
	r.Outcome = audit.OutcomeOK
	if event == audit.EventConnectionRejected {
		r.Outcome = audit.OutcomeDenied
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func (a *auditor) write(r audit.Record) {
	if aerr := a.trail.Append(r, false); aerr != nil {
		a.log.Error("connection event not audited", "event", r.Event, "error", aerr)
	}
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(mcp.TextContent); ok {
			return t.Text
		}
	}
	return "tool error"
}
