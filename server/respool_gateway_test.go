package server_test

import (
	"encoding/json"
	"sync"
	"testing"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// TestPooledAnswersStayIntact: lone requests' answers are encoded into
// pooled buffers reused once written (runInline); sessions calling status
// and ping at once each get every answer whole and for its own id (run
// with -race: a buffer reused while another goroutine still wrote it
// would be a race).
func TestPooledAnswersStayIntact(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	const sessions, calls = 6, 150
	var wg sync.WaitGroup
	for i := range sessions {
		cert := gw.Cert("pool", pki.RoleAgent)
		c, err := dialRPC(gw, gw.ClientConfig(&cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Go(func() {
			for n := range calls {
				if (n+i)%3 == 0 {
					res, err := c.call("ping", nil)
					if err != nil || string(res) != "{}" {
						t.Errorf("ping: %s, %v", res, err)
						return
					}
					continue
				}
				res, err := c.call("tools/call", map[string]any{"name": "nefia.mtls.status", "arguments": map[string]any{}})
				var tr toolResult
				if err != nil || json.Unmarshal(res, &tr) != nil || tr.IsError || tr.StructuredContent["enabled"] == nil || len(tr.Content) != 1 {
					t.Errorf("status: %.300s, %v", res, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
