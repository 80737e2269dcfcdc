package policy

import (
	"context"
	"sync"
	"time"
)

// slot holds the decision of one request. It is a pointer shared by every
// context derived from the one WithSlot returned, so a decision recorded
// deep in a handler chain is visible to code that holds the outer context
// (mcp-go's AfterCallTool hooks get the context the request arrived with,
// not the one a ToolHandlerMiddleware passes on). Locked because a
// task-augmented call may run its handler on another goroutine. The
// decision is held in the slot rather than pointed to, so recording one
// allocates nothing (issue 16: one allocation per call before).
type slot struct {
	mu    sync.Mutex
	d     Decision
	set   bool
	start time.Time // when the request's call began (MarkStart); zero until then
}

func (s *slot) store(d Decision) {
	s.mu.Lock()
	s.d, s.set = d, true
	s.mu.Unlock()
}

type slotKey struct{}

// WithSlot returns a context in which WithDecision records a decision
// visible through the returned context itself. Transports call it once per
// incoming message, never per session: two concurrent requests must never
// share a slot, or one call's decision could be audited for the other.
func WithSlot(ctx context.Context) context.Context {
	return context.WithValue(ctx, slotKey{}, &slot{})
}

// WithDecision records d for the request of ctx. If ctx carries a slot
// (WithSlot), d is stored there, so everyone holding the request's context
// sees it, and ctx is returned; otherwise the returned context carries d for
// the code it is passed to.
func WithDecision(ctx context.Context, d Decision) context.Context {
	if s, ok := ctx.Value(slotKey{}).(*slot); ok {
		s.store(d)
		return ctx
	}
	s := &slot{}
	s.store(d)
	return context.WithValue(ctx, slotKey{}, s)
}

// DecisionFromContext returns the decision recorded for the request of ctx;
// ok is false when none was (the call never reached authorization).
func DecisionFromContext(ctx context.Context) (d Decision, ok bool) {
	s, _ := ctx.Value(slotKey{}).(*slot)
	if s == nil {
		return Decision{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d, s.set
}

// MarkStart records in ctx's slot that the call of its request begins at
// t, and reports whether ctx has a slot (WithSlot). The audit hooks time
// every call with it and Started: the slot is the request's already, so,
// unlike a table keyed by request, this costs no allocation and no
// hashing (issue 16, second wave: two allocations per call before).
func MarkStart(ctx context.Context, t time.Time) bool {
	s, _ := ctx.Value(slotKey{}).(*slot)
	if s == nil {
		return false
	}
	s.mu.Lock()
	s.start = t
	s.mu.Unlock()
	return true
}

// Started returns when the call of ctx's request began (MarkStart); ok is
// false without a slot or a mark.
func Started(ctx context.Context) (t time.Time, ok bool) {
	s, _ := ctx.Value(slotKey{}).(*slot)
	if s == nil {
		return time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start, !s.start.IsZero()
}
