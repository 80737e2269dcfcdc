package server

import (
	"context"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/policy"
)

// TestCallTimingInMessageSlot (issue 16, second wave, item 2): a call is
// timed in its message's slot, without the table of starts (two
// allocations and two hash-trie operations per call before: the boxed
// time and the table's entry); a context without a slot (a transport that
// gives none) still gets its duration, from the table, which it leaves
// empty; a call that never began lasted 0. Not parallel: AllocsPerRun.
func TestCallTimingInMessageSlot(t *testing.T) {
	c := &callHooks{}
	req := &mcp.CallToolRequest{}
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"slot", policy.WithSlot(context.Background())},
		{"no slot", context.Background()},
	} {
		c.begin(tc.ctx, req)
		at := time.Now().Add(time.Second)
		if d := c.lasted(tc.ctx, req, at); d < time.Second || d > time.Minute {
			t.Errorf("%s: lasted %v, want a second and a little", tc.name, d)
		}
		if _, left := c.starts.Load(req); left {
			t.Errorf("%s: the call's start is left in the table", tc.name)
		}
	}
	if d := c.lasted(policy.WithSlot(context.Background()), req, time.Now()); d != 0 {
		t.Errorf("a call that never began lasted %v, want 0", d)
	}
	ctx := policy.WithSlot(context.Background())
	if n := testing.AllocsPerRun(100, func() {
		c.begin(ctx, req)
		c.lasted(ctx, req, time.Now())
	}); n != 0 {
		t.Errorf("timing a call: %v allocations, want 0", n)
	}
}
