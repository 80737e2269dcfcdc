package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

// TestServeEchoStdio: the stdio echo upstream answers a forwarded call
// (nefia's _meta included) the same way served by nefia's stream code,
// the default since issue 12 item 1, and by mcp-go's StdioServer, what
// the upstream phase measured before. Not parallel: mcp-go's stdio server
// has one package-global session.
func TestServeEchoStdio(t *testing.T) {
	for _, how := range []string{stdioStream, stdioMCPGo} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- serveEchoStdio(ctx, newEchoServer(), how, inR, outW); outW.Close() }()
			lines := bufio.NewScanner(outR)
			send := func(msg string) {
				if _, err := io.WriteString(inW, msg+"\n"); err != nil {
					t.Fatal(err)
				}
			}
			answer := func(id string) map[string]any {
				for lines.Scan() {
					var m map[string]any
					if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
						t.Fatalf("%s: %v", lines.Bytes(), err)
					}
					if raw, _ := json.Marshal(m["id"]); string(raw) == id {
						return m
					}
				}
				t.Fatalf("no answer to %s: %v", id, lines.Err())
				return nil
			}
			send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"nefia","version":"1"}}}`)
			answer("1")
			send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			send(`{"jsonrpc":"2.0","id":"nefia-call-1","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.nefia/agent":{"name":"bot","role":"agent"},"io.nefia/assertion":"x.y.z"}}}`)
			res, _ := answer(`"nefia-call-1"`)["result"].(map[string]any)
			if sc, _ := res["structuredContent"].(map[string]any); sc["text"] != "hi" {
				t.Errorf("echo answered %v", res)
			}
			inW.Close()
			if err := <-done; err != nil {
				t.Errorf("serveEchoStdio = %v, want nil once stdin ends", err)
			}
		})
	}
}

// TestEchoStdioFlag: --echo-stdio takes stream and/or mcp-go, once each;
// anything else is an error naming the flag.
func TestEchoStdioFlag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, value string
		want        []string // nil: an error
	}{
		{name: "default", want: []string{stdioStream}},
		{name: "both", value: "stream,mcp-go", want: []string{stdioStream, stdioMCPGo}},
		{name: "mcp-go first", value: " mcp-go , stream", want: []string{stdioMCPGo, stdioStream}},
		{name: "unknown", value: "stdio"},
		{name: "twice", value: "stream,stream"},
		{name: "empty", value: ","},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--nefia", "/bin/true"}
			if tt.name != "default" {
				args = append(args, "--echo-stdio", tt.value)
			}
			o, err := parseOptions(args, io.Discard)
			switch {
			case tt.want == nil && (err == nil || !strings.Contains(err.Error(), "--echo-stdio")):
				t.Errorf("--echo-stdio %q: err = %v, want one naming the flag", tt.value, err)
			case tt.want != nil && err != nil:
				t.Errorf("--echo-stdio %q: %v", tt.value, err)
			case tt.want != nil && strings.Join(o.echoStdios, ",") != strings.Join(tt.want, ","):
				t.Errorf("--echo-stdio %q = %v, want %v", tt.value, o.echoStdios, tt.want)
			}
		})
	}
}
