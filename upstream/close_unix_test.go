//go:build unix

package upstream_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// TestCloseStopsUpstreams: Close ends every stdio upstream, a polite one
// by closing its stdin and one that ignores that by killing it after the
// grace period, and Status then says stopped.
func TestCloseStopsUpstreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		stubborn bool
	}{
		{name: "polite"},
		{name: "ignores stdin closing", stubborn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, func(pub string) config.Upstream {
				u := stdioUpstream("up", pub)
				if tt.stubborn {
					u.Env[envStubborn] = "1"
				}
				return u
			})
			bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			pid := int(servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "a"})["pid"].(float64))
			start := time.Now()
			if err := f.m.Close(); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("upstream %d still running after Close (kill 0: %v)", pid, err)
			}
			if st := f.m.Status()[0]; st.State != upstream.StateStopped {
				t.Errorf("state after Close = %s", st.State)
			}
			if took > 10*time.Second {
				t.Errorf("Close took %s", took)
			}
			t.Logf("Close took %s", took)
			res := servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "b"})
			if !res.IsError {
				t.Errorf("call after Close = %+v, want a down tool error", res)
			}
		})
	}
}
