package audit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nefia/nefia/audit"
)

// TestRecordsCarryGatewayID: a trail opened for a gateway stamps its id
// on every record, inside the hashed bytes (editing it breaks the chain),
// and each gateway keeps a chain of its own (issue 15 item 4).
func TestRecordsCarryGatewayID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"gw-a", "gw-b"} {
		dir := filepath.Join(t.TempDir(), "audit")
		l := open(t, dir, audit.Options{GatewayID: id})
		appendN(t, l, 3, true)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		recs, err := audit.Tail(dir, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.GatewayID != id {
				t.Errorf("record %s has gateway_id %q, want %q", r.ID, r.GatewayID, id)
			}
		}
		if n, err := verify(t, dir); err != nil || n != 3 {
			t.Fatalf("verify: %d records, %v", n, err)
		}
		path := filepath.Join(dir, audit.TrailFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		forged := strings.Replace(string(data), `"gateway_id":"`+id+`"`, `"gateway_id":"gw-x"`, 1)
		if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := verify(t, dir); err == nil {
			t.Error("a record whose gateway_id was edited still verifies")
		}
	}
}
