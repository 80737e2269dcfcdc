package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// trailLines returns the raw lines of the gateway's current trail file.
func trailLines(t *testing.T, gw *servertest.Gateway) [][]byte {
	t.Helper()
	gw.AuditRecords() // flushes
	data, err := os.ReadFile(filepath.Join(gw.AuditDir, audit.TrailFile))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

// TestPeerStringsAreClippedInTheTrail sends what a peer controls at its
// largest: a 1 MB tool name over a real session (`<` is escaped to six bytes
// in JSON, so it once made a 6 MB record that `audit verify` could not read
// back), and a certificate from a foreign CA with a 200,000-character CN
// (once a 1.2 MB record per refused handshake). Each must leave a record
// under audit.MaxRecordBytes with a visible clip marker, an unverified name
// must be marked so, and the chain must verify.
func TestPeerStringsAreClippedInTheTrail(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	foreign := pkitest.NewForeignCA(t)

	tests := []struct {
		name  string
		act   func(t *testing.T)
		match func(r audit.Record) bool
		check func(t *testing.T, r audit.Record)
	}{
		{
			name: "1 MB tool name",
			act: func(t *testing.T) {
				c, err := dialRPC(gw, gw.ClientConfig(ptr(gw.Cert("ops", pki.RoleOperator))))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				line := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + strings.Repeat("<", 1<<20) + `"}}` + "\n"
				_ = c.conn.SetWriteDeadline(time.Now().Add(waitLimit))
				if _, err := c.conn.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.recv(); err != nil {
					t.Fatal(err)
				}
			},
			match: func(r audit.Record) bool { return r.Event == audit.EventToolCall },
			check: func(t *testing.T, r audit.Record) {
				if !strings.HasPrefix(r.Tool, "<<<") || !strings.Contains(r.Tool, "…[clipped ") || len(r.Tool) > 512 {
					t.Errorf("tool = %.80q… (%d bytes); want it clipped with a marker", r.Tool, len(r.Tool))
				}
			},
		},
		{
			name: "200,000-character CN from a foreign CA",
			act: func(t *testing.T) {
				cert := foreign.Sign(t, pkitest.Leaf{CN: strings.Repeat("<", 200_000), OU: string(pki.RoleOperator)})
				if err := gw.Probe(gw.ClientConfig(&cert)); err == nil {
					t.Fatal("a foreign certificate got in")
				}
			},
			match: func(r audit.Record) bool { return r.Event == audit.EventConnectionRejected && r.Agent != nil },
			check: func(t *testing.T, r audit.Record) {
				if !r.Agent.Unverified || !strings.Contains(r.Agent.Name, "…[clipped ") || len(r.Agent.Name) > 128 {
					t.Errorf("agent = unverified %v, name %.80q… (%d bytes); want unverified, clipped short", r.Agent.Unverified, r.Agent.Name, len(r.Agent.Name))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(trailLines(t, gw))
			tt.act(t)
			var found bool
			deadline := time.Now().Add(waitLimit)
			for !found && time.Now().Before(deadline) {
				recs := gw.AuditRecords()
				lines := trailLines(t, gw)
				for i := before; i < len(lines) && i < len(recs); i++ {
					if !tt.match(recs[i]) {
						continue
					}
					found = true
					if len(lines[i]) > audit.MaxRecordBytes {
						t.Errorf("record is %d bytes, the cap is %d", len(lines[i]), audit.MaxRecordBytes)
					}
					t.Logf("record: %d bytes", len(lines[i]))
					tt.check(t, recs[i])
				}
				if !found {
					time.Sleep(10 * time.Millisecond) // the refusal is audited after the client sees it
				}
			}
			if !found {
				t.Fatal("no record of it on the trail")
			}
			gw.VerifyAudit()
		})
	}
}

func ptr[T any](v T) *T { return &v }
