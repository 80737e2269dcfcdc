package server

import (
	"encoding/json"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

func TestSessionStateSubscriptionFilter(t *testing.T) {
	toolsOnly := mcp.SubscriptionFilter{ToolsListChanged: true}
	tests := []struct {
		name       string
		handshake  string // protocol version set by initialize, "" for none
		listen     bool
		filter     mcp.SubscriptionFilter
		wantFilter mcp.SubscriptionFilter
		wantActive bool
	}{
		{name: "2026-07-28, no listen: nothing is sent", wantActive: true},
		{name: "2026-07-28, listening", listen: true, filter: toolsOnly, wantFilter: toolsOnly, wantActive: true},
		{name: "handshake, no listen: unfiltered", handshake: "2025-11-25", wantActive: false},
		{name: "handshake, listening", handshake: "2025-11-25", listen: true, filter: toolsOnly, wantFilter: toolsOnly, wantActive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s sessionState
			if tc.handshake != "" {
				s.SetProtocolVersion(tc.handshake)
			}
			if tc.listen {
				if !s.beginListen(json.RawMessage(`"L"`)) {
					t.Fatal("beginListen refused the first listen")
				}
				s.SetSubscriptionFilter(tc.filter)
			}
			filter, active := s.SubscriptionFilter()
			if active != tc.wantActive || !equalFilters(filter, tc.wantFilter) {
				t.Errorf("SubscriptionFilter = %+v, %v; want %+v, %v", filter, active, tc.wantFilter, tc.wantActive)
			}
		})
	}
}

func equalFilters(a, b mcp.SubscriptionFilter) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestSessionStateListen(t *testing.T) {
	var s sessionState
	if !s.beginListen(json.RawMessage(`1`)) {
		t.Fatal("first listen refused")
	}
	if s.beginListen(json.RawMessage(`2`)) {
		t.Error("second concurrent listen accepted")
	}
	if got := string(s.openListenID()); got != "1" {
		t.Errorf("open listen id = %s, want 1", got)
	}
	s.endListen()
	if s.openListenID() != nil {
		t.Error("listen still open after endListen")
	}
	if !s.beginListen(json.RawMessage(`3`)) {
		t.Error("listen refused after the previous one ended")
	}
}

func TestSessionStateDefaults(t *testing.T) {
	var s sessionState
	if s.Initialized() {
		t.Error("new session already initialized")
	}
	if got := s.GetLogLevel(); got != mcp.LoggingLevelError {
		t.Errorf("default log level = %q, want error", got)
	}
	s.SetLogLevel(mcp.LoggingLevelDebug)
	s.Initialize() // must not reset a level the client chose
	if got := s.GetLogLevel(); got != mcp.LoggingLevelDebug {
		t.Errorf("log level after Initialize = %q, want debug", got)
	}
	if !s.Initialized() {
		t.Error("not initialized after Initialize")
	}
	if s.GetClientInfo().Name != "" || s.ProtocolVersion() != "" || s.GetSessionTools() != nil {
		t.Error("new session has client info, protocol version or tools")
	}
}

func TestSessionStateToolsAreCopied(t *testing.T) {
	var s sessionState
	tools := map[string]mcpserver.ServerTool{"a": {Tool: mcp.NewTool("a")}}
	s.SetSessionTools(tools)
	delete(tools, "a")
	got := s.GetSessionTools()
	if _, ok := got["a"]; !ok {
		t.Fatal("SetSessionTools kept the caller's map")
	}
	delete(got, "a")
	if _, ok := s.GetSessionTools()["a"]; !ok {
		t.Error("GetSessionTools returned the session's own map")
	}
}
