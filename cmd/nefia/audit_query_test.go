package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
)

// writeTrail appends recs to the trail of c's state directory through the
// audit logger, rotating every few records, each stamped at its own time.
func (c *cli) writeTrail(recs []audit.Record, times []time.Time) {
	c.t.Helper()
	var i int
	l, err := audit.Open(filepath.Join(c.stateDir, "audit"), audit.Options{MaxSize: 600, Now: func() time.Time { return times[i] }})
	if err != nil {
		c.t.Fatal(err)
	}
	for i = range recs {
		if err := l.Append(recs[i], true); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		c.t.Fatal(err)
	}
}

// TestAuditQueryCLI (issue 14 item 2): 'nefia audit query' filters by
// agent, serial, event, tool, outcome and time, across rotated files, and
// 'audit tail' takes the same filters.
func TestAuditQueryCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	now := time.Now().UTC()
	ops := &audit.Agent{Name: "ops", Serial: "aa01", Role: "operator"}
	bot := &audit.Agent{Name: "claude-bot", Serial: "bb02", Role: "agent"}
	recs := []audit.Record{
		{Event: audit.EventIssueClient, Agent: ops, Outcome: audit.OutcomeOK, Args: map[string]any{"name": "claude-bot", "role": "agent"}, Result: map[string]any{"serial": "bb02", "name": "claude-bot", "role": "agent"}},
		{Event: audit.EventToolCall, Tool: "nefia.mtls.status", Agent: bot, Outcome: audit.OutcomeOK},
		{Event: audit.EventToolCall, Tool: "nefia.mtls.revoke", Agent: bot, Outcome: audit.OutcomeDenied, Reason: "role agent may not"},
		{Event: audit.EventConnectionRejected, Agent: &audit.Agent{Name: "evil\x1b[2J", Unverified: true}, Outcome: audit.OutcomeDenied, Reason: "certificate revoked"},
		{Event: audit.EventRevoke, Agent: ops, Outcome: audit.OutcomeOK, Args: map[string]any{"serial": "BB:02", "reason": "lost"}, Result: map[string]any{"serial": "bb02", "name": "claude-bot"}},
		{Event: audit.EventToolCall, Tool: "nefia.mtls.status", Agent: ops, Outcome: audit.OutcomeOK},
		{Event: audit.EventDisconnect, Agent: &audit.Agent{Name: "root", Role: "operator"}, Outcome: audit.OutcomeOK, Args: map[string]any{"serial": "bb02"}, Result: map[string]any{"closed": []any{"c-1 claude-bot bb02"}}},
	}
	var times []time.Time
	for i := range recs {
		times = append(times, now.Add(time.Duration(i-len(recs))*time.Hour)) // 6h ago .. 1h ago
	}
	c.writeTrail(recs, times)
	if files, _ := filepath.Glob(filepath.Join(c.stateDir, "audit", "audit-*.jsonl")); len(files) < 2 {
		t.Fatalf("%d rotated files; the test needs the records spread over several", len(files))
	}

	tests := []struct {
		name string
		args []string
		want []int // indexes into recs
	}{
		{name: "all", want: []int{0, 1, 2, 3, 4, 5, 6}},
		{name: "agent", args: []string{"--agent", "claude-bot"}, want: []int{1, 2}},
		{name: "agent glob", args: []string{"--agent", "claude-*"}, want: []int{1, 2}},
		{name: "serial: actor or subject, any form", args: []string{"--serial", "BB:02"}, want: []int{0, 1, 2, 4, 6}},
		{name: "event", args: []string{"--event", "mtls.revoke"}, want: []int{4}},
		{name: "event glob list", args: []string{"--event", "mtls.*,connection_rejected"}, want: []int{0, 3, 4}},
		{name: "disconnects", args: []string{"--event", "gateway.disconnect"}, want: []int{6}},
		{name: "tool", args: []string{"--tool", "nefia.mtls.status"}, want: []int{1, 5}},
		{name: "outcome", args: []string{"--outcome", "denied"}, want: []int{2, 3}},
		{name: "since duration", args: []string{"--since", "150m"}, want: []int{5, 6}},
		{name: "until RFC 3339", args: []string{"--until", times[2].Format(time.RFC3339)}, want: []int{0, 1}},
		{name: "combined", args: []string{"--agent", "ops", "--event", "tool_call", "--since", "1d"}, want: []int{5}},
		{name: "limit", args: []string{"--limit", "2"}, want: []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := c.run(append([]string{"audit", "query", "--json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got []int
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line == "" {
					continue
				}
				var r audit.Record
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				for i, tm := range times {
					if r.Time.Equal(tm) {
						got = append(got, i)
					}
				}
			}
			if !equalInts(got, tt.want) {
				t.Fatalf("audit query %v = records %v, want %v", tt.args, got, tt.want)
			}
		})
	}

	t.Run("human view says what each event was about, escaped", func(t *testing.T) {
		out := c.mustRun("audit", "query")
		for _, want := range []string{
			"name claude-bot, role agent, serial bb02",  // the issue
			"serial bb02, name claude-bot, reason lost", // the revoke
			"reason: certificate revoked",               // the refusal
			"serial bb02, 1 closed",                     // the disconnect
			`evil\x1b[2J`,                               // escaped, not a terminal command
		} {
			if !strings.Contains(out, want) {
				t.Errorf("human view lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("human view carries a raw ESC:\n%q", out)
		}
	})
	t.Run("tail filters too", func(t *testing.T) {
		out := c.mustRun("audit", "tail", "-n", "1", "--agent", "claude-bot", "--json")
		var r audit.Record
		if err := json.Unmarshal([]byte(out), &r); err != nil || !r.Time.Equal(times[2]) {
			t.Fatalf("tail -n 1 --agent claude-bot = %q (%v), want record 2", out, err)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAuditQueryBadFlagsExit2 (issue 14 item 2): a bad filter is exit 2
// naming the flag.
func TestAuditQueryBadFlagsExit2(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{name: "bad serial", args: []string{"--serial", "xyz"}, flag: "--serial"},
		{name: "bad outcome", args: []string{"--outcome", "fine"}, flag: "--outcome"},
		{name: "bad since", args: []string{"--since", "yesterday"}, flag: "--since"},
		{name: "negative since", args: []string{"--since", "-1h"}, flag: "--since"},
		{name: "bad until", args: []string{"--until", "2026-13-01"}, flag: "--until"},
		{name: "since after until", args: []string{"--since", "1h", "--until", "2h"}, flag: "--since"},
		{name: "bad agent glob", args: []string{"--agent", "["}, flag: "--agent"},
		{name: "bad event glob", args: []string{"--event", "mtls.["}, flag: "--event"},
		{name: "empty tool list", args: []string{"--tool", ","}, flag: "--tool"},
		{name: "negative limit", args: []string{"--limit", "-1"}, flag: "--limit"},
	}
	for _, tt := range tests {
		for _, sub := range []string{"query", "tail"} {
			if sub == "tail" && tt.flag == "--limit" {
				continue
			}
			t.Run(sub+" "+tt.name, func(t *testing.T) {
				t.Parallel()
				out, errOut, code := c.run(append([]string{"audit", sub}, tt.args...)...)
				if code != 2 || !strings.Contains(errOut, tt.flag) || strings.Count(errOut, "\n") != 1 || out != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q; want 2 and one line naming %s", code, out, errOut, tt.flag)
				}
			})
		}
	}
}
