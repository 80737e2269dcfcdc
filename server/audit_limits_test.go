package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestRefusalFloodIsRateLimited makes 3,000 bare TCP connects (no TLS at
// all), which once wrote 3,000 connection_rejected records in a quarter of
// a second (issue 10 item 11). Now one address gets at most its first
// refusal of each kind, a burst of 10 and 1 a second; what is suppressed is
// summed up in a connection_rejected_suppressed record, so the records and
// the summary together account for every refusal.
func TestRefusalFloodIsRateLimited(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	const connects = 3000
	before := len(gw.AuditRecords())
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for range connects / 8 {
				c, err := net.DialTimeout("tcp", gw.Addr, waitLimit)
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				// Half-close and wait for the gateway to hang up: by then
				// it has judged (and audited) this connection.
				_ = c.(*net.TCPConn).CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(waitLimit))
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
	wg.Wait()
	if err := gw.Stop(); err != nil { // every refusal handled, the summary written
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	var rejected, summaries, suppressed int
	for _, r := range gw.AuditRecords()[before:] {
		switch r.Event {
		case audit.EventConnectionRejected:
			rejected++
		case audit.EventConnectionRejectedSuppressed:
			summaries++
			n, _ := r.Result["suppressed"].(float64)
			suppressed += int(n)
			t.Logf("summary: %s %v", r.Reason, r.Result["by_reason"])
		}
	}
	// The first refusal of each kind (at most 8), the burst of 10, then 1 a
	// second: the limits in server/refusals.go.
	limit := 8 + 10 + int(math.Ceil(elapsed.Seconds()))
	t.Logf("%d bare connects in %v: %d connection_rejected records, %d summaries of %d suppressed", connects, elapsed.Round(time.Millisecond), rejected, summaries, suppressed)
	if rejected > limit {
		t.Errorf("%d connection_rejected records for %d connects from one address in %v; want at most %d", rejected, connects, elapsed, limit)
	}
	if summaries != 1 || rejected+suppressed != connects {
		t.Errorf("%d summaries accounting for %d suppressed + %d recorded; want 1 accounting for all %s", summaries, suppressed, rejected, fmt.Sprint(connects))
	}
	gw.VerifyAudit()
}

// auditedRefusals stops gw (so the summary of the refusals its rate limit
// suppressed is written) and counts its refusals by reason, those recorded
// one by one and those summed up in summaries alike; one is the first kind.
func auditedRefusals(t *testing.T, gw *servertest.Gateway) (byReason map[string]int, one int) {
	t.Helper()
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	byReason = map[string]int{}
	for _, r := range gw.AuditRecords() {
		switch r.Event {
		case audit.EventConnectionRejected:
			byReason[r.Reason]++
			one++
		case audit.EventConnectionRejectedSuppressed:
			by, _ := r.Result["by_reason"].(map[string]any)
			for reason, n := range by {
				f, _ := n.(float64)
				byReason[reason] += int(f)
			}
		}
	}
	return byReason, one
}

// TestDeniedCallFloodIsRateLimited (review of issue 10): an agent sending
// denied calls with 15 KB of arguments as fast as one connection goes grew
// the trail by 25 MB/s, until the disk was full and the operator's
// revocation of that agent was refused. Denied calls are now recorded at
// most callBurst at once and callRate a second per certificate, with their
// arguments as a digest, and the rest summed in one summary.
func TestDeniedCallFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	cert := gw.Cert("bot", pki.RoleAgent)
	conn, err := gw.Dial(gw.ClientConfig(&cert))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var args []string
	for i := range 15 {
		args = append(args, fmt.Sprintf(`"k%02d":"%s"`, i, strings.Repeat("A", 1000)))
	}
	argJSON := "{" + strings.Join(args, ",") + "}"
	const calls = 1000
	trail := filepath.Join(gw.AuditDir, audit.TrailFile)
	before, err := os.Stat(trail)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go func() {
		w := bufio.NewWriter(conn)
		fmt.Fprintln(w, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
		fmt.Fprintln(w, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		for i := 1; i <= calls; i++ {
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"nefia.mtls.revoke","arguments":%s}}`+"\n", i, argJSON)
		}
		w.Flush()
	}()
	// Every call answered: the last id's answer is the last line.
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	answered := 0
	for answered < calls+1 && sc.Scan() {
		answered++
	}
	if answered != calls+1 {
		t.Fatalf("%d answers, want %d: %v", answered, calls+1, sc.Err())
	}
	elapsed := time.Since(start)
	conn.Close()
	if err := gw.Stop(); err != nil { // the summary is written
		t.Fatal(err)
	}
	after, err := os.Stat(trail)
	if err != nil {
		t.Fatal(err)
	}
	var denied, suppressed, summaries int
	for _, r := range gw.AuditRecords() {
		switch {
		case r.Event == audit.EventToolCall && r.Outcome == audit.OutcomeDenied:
			denied++
			if _, ok := r.Args["_sha256"]; !ok || r.Args["k00"] != nil {
				t.Errorf("a denied call's arguments recorded whole: %v", r.Args)
			}
		case r.Event == audit.EventToolCallSuppressed:
			summaries++
			n, _ := r.Result["suppressed"].(float64)
			suppressed += int(n)
		}
	}
	limit := 20 + int(math.Ceil(2*elapsed.Seconds()))
	grew := after.Size() - before.Size()
	t.Logf("%d denied calls with 15 KB of arguments in %v: %d records, %d summarized in %d summaries; trail grew %d bytes", calls, elapsed.Round(time.Millisecond), denied, suppressed, summaries, grew)
	if denied > limit || denied+suppressed != calls || summaries != 1 {
		t.Errorf("%d denied records + %d suppressed in %d summaries for %d calls; want at most %d records, all accounted for in 1 summary", denied, suppressed, summaries, calls, limit)
	}
	if grew > 256<<10 {
		t.Errorf("the trail grew %d bytes for %d denied calls; want under 256 KiB", grew, calls)
	}
	gw.VerifyAudit()
}
