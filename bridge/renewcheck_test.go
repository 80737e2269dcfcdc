package bridge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/bridge"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// warnings counts WARN records by message.
type warnings struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.Level == slog.LevelWarn {
		w.msgs[r.Message]++
	}
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// TestBridgeWarnsWhenPolicyHidesRenew (issue 16 item 1): a custom agent
// policy without nefia.mtls.renew made the bridge's renewal fail only when
// the certificate was due, silently until then. Now the first complete
// tools/list without the tool logs one WARN, and only with renewal on.
func TestBridgeWarnsWhenPolicyHidesRenew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tools  []string // what the gateway lists, twice
		renew  bool
		cursor string // the gateway's nextCursor
		want   int
	}{
		{name: "renew hidden", tools: []string{"nefia.mtls.status", "fs.read_file"}, renew: true, want: 1},
		{name: "renew listed", tools: []string{"nefia.mtls.status", "nefia.mtls.renew"}, renew: true, want: 0},
		{name: "renewal off", tools: []string{"nefia.mtls.status"}, renew: false, want: 0},
		{name: "list continues", tools: []string{"nefia.mtls.status"}, renew: true, cursor: "p2", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := pkitest.NewStore(t)
			kp := pkitest.KeyPair(t, pkitest.Issue(t, store, "agent", pki.RoleAgent, time.Hour))
			list := `{"tools":[`
			for i, n := range tt.tools {
				if i > 0 {
					list += ","
				}
				list += fmt.Sprintf(`{"name":%q,"inputSchema":{"type":"object"}}`, n)
			}
			list += `]`
			if tt.cursor != "" {
				list += fmt.Sprintf(`,"nextCursor":%q`, tt.cursor)
			}
			list += `}`
			addr := fakeGateway(t, store, func(c *tls.Conn, lines *bufio.Reader) {
				answerProbe(c, lines)
				for id := 1; id <= 2; id++ {
					if _, err := lines.ReadBytes('\n'); err != nil {
						return
					}
					fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%d,"result":%s}`+"\n", id, list)
				}
				_, _ = io.Copy(io.Discard, lines)
			})
			w := &warnings{msgs: map[string]int{}}
			r := start(t, addr, store, kp, func(o *bridge.Options) {
				o.Logger = slog.New(w)
				if tt.renew {
					o.Renew = func(context.Context, tls.Certificate) (tls.Certificate, error) {
						return tls.Certificate{}, fmt.Errorf("not called in this test")
					}
				}
			})
			out := bufio.NewReader(r.out)
			for id := 1; id <= 2; id++ {
				if _, err := fmt.Fprintf(r.in, `{"jsonrpc":"2.0","id":%d,"method":"tools/list","params":{}}`+"\n", id); err != nil {
					t.Fatal(err)
				}
				if got := readLine(t, out); fmt.Sprint(got["id"]) != fmt.Sprint(id) {
					t.Fatalf("answer %v, want id %d", got, id)
				}
			}
			r.in.Close()
			if err := r.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if got := w.msgs[bridge.MsgRenewDenied]; got != tt.want {
				t.Errorf("%d warnings %q, want %d (all: %v)", got, bridge.MsgRenewDenied, tt.want, w.msgs)
			}
			if tt.want > 0 && !strings.Contains(bridge.MsgRenewDenied, "nefia.mtls.renew") {
				t.Error("the warning does not name the tool")
			}
		})
	}
}
