package audit_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
)

func open(t testing.TB, dir string, opts audit.Options) *audit.Logger {
	t.Helper()
	l, err := audit.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendN(t testing.TB, l *audit.Logger, n int, durable bool) {
	t.Helper()
	for i := range n {
		r := audit.Record{Event: audit.EventToolCall, Tool: "nefia.mtls.status", Outcome: audit.OutcomeOK,
			Agent: &audit.Agent{Name: fmt.Sprintf("a%d", i), Serial: "ab", Role: "agent"}}
		if err := l.Append(r, durable); err != nil {
			t.Fatal(err)
		}
	}
}

func verify(t *testing.T, dir string) (int, error) {
	t.Helper()
	key, err := audit.LoadKey(filepath.Join(dir, audit.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return audit.VerifyDir(dir, key)
}

func TestAppendVerifyAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := open(t, dir, audit.Options{})
	appendN(t, l, 5, false)
	appendN(t, l, 2, true)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, audit.Options{})
	appendN(t, l, 3, true)
	l.Close()
	if n, err := verify(t, dir); err != nil || n != 10 {
		t.Fatalf("verify = %d, %v; want 10, nil", n, err)
	}
	recs, err := audit.Tail(dir, 10)
	if err != nil || len(recs) != 10 {
		t.Fatal(len(recs), err)
	}
	if recs[0].PrevHash != audit.Genesis || recs[5].PrevHash != recs[4].Hash || recs[7].PrevHash != recs[6].Hash {
		t.Error("chain does not link across the restart")
	}
	for _, name := range []string{audit.KeyFile, audit.TrailFile} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v (%v), want 0600", name, fi.Mode().Perm(), err)
		}
	}
}

// lines reads the trail and returns its lines for tampering.
func lines(t *testing.T, dir string) [][]byte {
	data, err := os.ReadFile(filepath.Join(dir, audit.TrailFile))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

func writeLines(t *testing.T, dir string, ls [][]byte) {
	var b bytes.Buffer
	for _, l := range ls {
		b.Write(bytes.TrimSuffix(l, []byte("\n")))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, audit.TrailFile), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	tests := []struct {
		name     string
		tamper   func(t *testing.T, dir string, ls [][]byte) [][]byte
		wantLine int
		want     string
	}{
		{"edit agent name", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			ls[3] = bytes.Replace(ls[3], []byte(`"name":"a3"`), []byte(`"name":"zz"`), 1)
			return ls
		}, 4, "does not match"},
		{"edit outcome", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			ls[2] = bytes.Replace(ls[2], []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1)
			return ls
		}, 3, "does not match"},
		{"edit time", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			ls[1] = bytes.Replace(ls[1], []byte(`"time":"2`), []byte(`"time":"1`), 1)
			return ls
		}, 2, "does not match"},
		{"edit hash", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			i := bytes.Index(ls[4], []byte(`"hash":"`)) + 8
			ls[4][i] ^= 1
			return ls
		}, 5, ""},
		{"truncate a line", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			ls[2] = ls[2][:len(ls[2])/2]
			return ls
		}, 3, "not a JSON object"},
		{"delete a line", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			return append(ls[:2], ls[3:]...)
		}, 3, "deleted"},
		{"delete the first line", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			return ls[1:]
		}, 1, "deleted"},
		{"swap two lines", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			ls[2], ls[3] = ls[3], ls[2]
			return ls
		}, 3, "reordered"},
		{"duplicate a line", func(t *testing.T, _ string, ls [][]byte) [][]byte {
			return append(ls[:3], append([][]byte{ls[1]}, ls[3:]...)...)
		}, 4, "inserted or duplicated"},
		{"append a forged line", func(t *testing.T, dir string, ls [][]byte) [][]byte {
			other := t.TempDir() // same shape, another key
			l := open(t, other, audit.Options{})
			appendN(t, l, 1, true)
			l.Close()
			forged := lines(t, other)[0]
			last := ls[len(ls)-1]
			i := bytes.Index(last, []byte(`"hash":"`)) + 8
			prev := last[i : i+64]
			forged = bytes.Replace(forged, []byte(audit.Genesis), prev, 1)
			return append(ls, forged)
		}, 7, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, dir, audit.Options{})
			appendN(t, l, 6, true)
			l.Close()
			writeLines(t, dir, tt.tamper(t, dir, lines(t, dir)))
			_, err := verify(t, dir)
			var ve *audit.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, audit.ErrBroken) {
				t.Fatalf("verify = %v, want a VerifyError", err)
			}
			if ve.Line != tt.wantLine || !strings.Contains(ve.Reason, tt.want) {
				t.Errorf("verify says line %d %q, want line %d mentioning %q", ve.Line, ve.Reason, tt.wantLine, tt.want)
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		dir := t.TempDir()
		l := open(t, dir, audit.Options{})
		appendN(t, l, 2, true)
		l.Close()
		key := bytes.Repeat([]byte{7}, 32)
		_, err := audit.VerifyDir(dir, key)
		var ve *audit.VerifyError
		if !errors.As(err, &ve) || ve.Line != 1 || !strings.Contains(ve.Reason, "another key") {
			t.Fatalf("verify with another key = %v", err)
		}
	})
}

func TestTornTailIsCutAndReported(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, audit.Options{})
	appendN(t, l, 3, true)
	l.Close()
	f, _ := os.OpenFile(filepath.Join(dir, audit.TrailFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"torn","time":"2026-`)
	f.Close()
	if _, err := verify(t, dir); err == nil {
		t.Fatal("verify accepts a torn last line")
	}
	l = open(t, dir, audit.Options{})
	appendN(t, l, 1, true)
	l.Close()
	n, err := verify(t, dir)
	if err != nil || n != 5 {
		t.Fatalf("after recovery: %d records, %v; want 5 (3 + recovered + 1)", n, err)
	}
	recs, _ := audit.Tail(dir, 2)
	if recs[0].Event != audit.EventRecovered || !strings.Contains(recs[0].Reason, "26 bytes") {
		t.Errorf("recovery record = %+v", recs[0])
	}
}

func TestCorruptLastRecordRefusesToContinue(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, audit.Options{})
	appendN(t, l, 2, true)
	l.Close()
	ls := lines(t, dir)
	ls[1] = bytes.Replace(ls[1], []byte(`"name":"a1"`), []byte(`"name":"b1"`), 1)
	writeLines(t, dir, ls)
	if _, err := audit.Open(dir, audit.Options{}); !errors.Is(err, audit.ErrUnavailable) || !strings.Contains(err.Error(), audit.TrailFile) {
		t.Fatalf("open over an edited last record = %v, want ErrUnavailable naming the file", err)
	}
}

func TestRotationKeepsTheChain(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, audit.Options{MaxSize: 2 << 10})
	for range 60 {
		appendN(t, l, 1, false)
		if err := l.Flush(); err != nil { // rotation happens between writes
			t.Fatal(err)
		}
	}
	l.Close()
	rotated, _ := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if len(rotated) < 2 {
		t.Fatalf("%d rotated files, want several", len(rotated))
	}
	if n, err := verify(t, dir); err != nil || n != 60 {
		t.Fatalf("verify across rotation = %d, %v", n, err)
	}
	// A restart continues from the newest file.
	l = open(t, dir, audit.Options{MaxSize: 2 << 10})
	appendN(t, l, 1, true)
	l.Close()
	if n, err := verify(t, dir); err != nil || n != 61 {
		t.Fatalf("verify after restart = %d, %v", n, err)
	}
	if recs, err := audit.Tail(dir, 30); err != nil || len(recs) != 30 {
		t.Fatalf("tail across files: %d, %v", len(recs), err)
	}
}

// TestConcurrentWriters has two Loggers on one trail (as the gateway and the
// CLI are two processes) and many goroutines on each.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, audit.Options{MaxSize: 16 << 10})
	b := open(t, dir, audit.Options{MaxSize: 16 << 10})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := a
			if i%2 == 1 {
				l = b
			}
			appendN(t, l, 25, i%5 == 0)
		}()
	}
	wg.Wait()
	a.Close()
	b.Close()
	if n, err := verify(t, dir); err != nil || n != 500 {
		t.Fatalf("verify = %d, %v; want 500", n, err)
	}
}

func TestUnwritableTrailRefuses(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(dir string)
	}{
		{"file removed", func(dir string) { os.Remove(filepath.Join(dir, audit.TrailFile)) }},
		{"path taken by a directory", func(dir string) {
			os.Remove(filepath.Join(dir, audit.TrailFile))
			os.Mkdir(filepath.Join(dir, audit.TrailFile), 0o700)
		}},
		{"replaced by an empty file", func(dir string) {
			os.Remove(filepath.Join(dir, audit.TrailFile))
			os.WriteFile(filepath.Join(dir, audit.TrailFile), nil, 0o600)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, dir, audit.Options{})
			defer l.Close()
			appendN(t, l, 1, true)
			tt.break_(dir)
			err := l.Append(audit.Record{Event: audit.EventRevoke}, true)
			if !errors.Is(err, audit.ErrUnavailable) {
				t.Fatalf("append = %v, want ErrUnavailable", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	pemText := "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
	got := audit.Redact(map[string]any{
		"name": "bot", "csr_pem": pemText, "private_key": "abc", "token": "t",
		"nested": map[string]any{"x": []any{pemText}},
	})
	if got["name"] != "bot" || got["private_key"] != "[redacted]" || got["token"] != "[redacted]" {
		t.Errorf("redacted = %v", got)
	}
	if s, _ := got["csr_pem"].(string); !strings.HasPrefix(s, "sha256:") {
		t.Errorf("CSR kept as %q, want its sha256", s)
	}
	if strings.Contains(fmt.Sprint(got), "BEGIN") {
		t.Errorf("PEM survived redaction: %v", got)
	}
	big := audit.Redact(map[string]any{"pad": strings.Repeat("x", 64<<10)})
	if _, ok := big["_omitted"]; !ok || len(big) != 2 {
		t.Errorf("oversized args kept: %d keys", len(big))
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, durable := range []bool{false, true} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			l := open(b, b.TempDir(), audit.Options{})
			defer l.Close()
			r := audit.Record{Event: audit.EventToolCall, Tool: "nefia.mtls.status", Outcome: audit.OutcomeOK, Agent: &audit.Agent{Name: "a", Serial: "ab", Role: "agent"}}
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Append(r, durable); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBatchedRecordsKeepOrderAndReachDisk checks group commit: non-durable
// records are invisible until a flush, then appear in order, chained, and a
// durable record flushes everything before it.
func TestBatchedRecordsKeepOrderAndReachDisk(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, audit.Options{SyncInterval: time.Hour})
	defer l.Close()
	appendN(t, l, 3, false)
	if recs, _ := audit.Tail(dir, 10); len(recs) != 0 {
		t.Fatalf("%d records visible before any flush", len(recs))
	}
	if err := l.Append(audit.Record{Event: audit.EventRevoke, Outcome: audit.OutcomeStarted}, true); err != nil {
		t.Fatal(err)
	}
	recs, _ := audit.Tail(dir, 10)
	if len(recs) != 4 || recs[3].Event != audit.EventRevoke || recs[0].Agent.Name != "a0" || recs[2].Agent.Name != "a2" {
		t.Fatalf("after a durable append: %+v", recs)
	}
	appendN(t, l, 2, false)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, err := verify(t, dir); err != nil || n != 6 {
		t.Fatalf("verify = %d, %v", n, err)
	}
}
