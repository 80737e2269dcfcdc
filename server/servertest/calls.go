package servertest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// callTimeout bounds every call these helpers make.
const callTimeout = 20 * time.Second

// InitializeRequest is the initialize request test clients send (protocol
// 2025-11-25, the era with the initialize handshake).
func InitializeRequest() mcp.InitializeRequest {
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	req.Params.ClientInfo = mcp.Implementation{Name: "nefia-test", Version: "1"}
	return req
}

// CallTool calls a tool and fails the test on a protocol error; a tool error
// (IsError) is returned for the caller to judge.
func CallTool(t testing.TB, c *client.Client, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("servertest: call %s: %v", name, err)
	}
	return res
}

// CallOK calls a tool that must succeed and returns its structured content.
func CallOK(t testing.TB, c *client.Client, name string, args map[string]any) map[string]any {
	t.Helper()
	res := CallTool(t, c, name, args)
	if res.IsError {
		t.Fatalf("servertest: %s: tool error %v", name, res.Content)
	}
	return Structured(t, res)
}

// Structured returns a result's structured content as a JSON object.
func Structured(t testing.TB, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	data, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("servertest: structured content %s: %v", data, err)
	}
	return m
}
