package policy

import (
	"context"
	"sync/atomic"
)

// slot holds the decision of one request. It is a pointer shared by every
// context derived from the one WithSlot returned, so a decision recorded
// deep in a handler chain is visible to code that holds the outer context
// (mcp-go's AfterCallTool hooks get the context the request arrived with,
// not the one a ToolHandlerMiddleware passes on). Atomic because a
// task-augmented call may run its handler on another goroutine.
type slot struct{ d atomic.Pointer[Decision] }

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
		s.d.Store(&d)
		return ctx
	}
	s := &slot{}
	s.d.Store(&d)
	return context.WithValue(ctx, slotKey{}, s)
}

// DecisionFromContext returns the decision recorded for the request of ctx;
// ok is false when none was (the call never reached authorization).
func DecisionFromContext(ctx context.Context) (d Decision, ok bool) {
	s, _ := ctx.Value(slotKey{}).(*slot)
	if s == nil {
		return Decision{}, false
	}
	p := s.d.Load()
	if p == nil {
		return Decision{}, false
	}
	return *p, true
}
