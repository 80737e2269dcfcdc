package renewal_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/renewal"
	"github.com/nefia/nefia/server/servertest"
)

// TestRenewersOnOneDirectoryRenewOnce: two processes (two bridges) renew
// the certificate of one directory at the same moment. Without a lock
// across the check for a newer pair, the renewal and the write, both
// renewed it and the second renewal revoked the first one's new
// certificate (a chain keeps one successor), which one of them then used
// or left in the files. Under the files' lock the gateway is asked once,
// the other adopts the pair in the files, and that pair is active (issue
// 13, attack item 7).
func TestRenewersOnOneDirectoryRenewOnce(t *testing.T) {
	t.Parallel()
	// The certificate was issued ten minutes ago, so that its successor
	// ends later (Files.Newer adopts only a later one).
	clk := pkitest.NewClock(time.Now().Add(-10 * time.Minute))
	store := pkitest.NewStore(t, pki.WithClock(clk))
	g := servertest.StartWithStore(t, store)
	iss := g.Issue("bot", pki.RoleAgent, time.Hour)
	clk.Set(time.Now())
	dir := t.TempDir()
	files := renewal.Files{Cert: filepath.Join(dir, "bot.crt"), Key: filepath.Join(dir, "bot.key")}
	if err := files.Write(iss.KeyPEM, iss.CertPEM); err != nil {
		t.Fatal(err)
	}
	cur := pkitest.KeyPair(t, iss)
	const renewers = 3
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]renewal.Result, renewers)
		errs    = make([]error, renewers)
	)
	for i := range renewers {
		wg.Go(func() {
			cfg := g.ClientConfig(nil)
			cfg.Certificates = []tls.Certificate{cur}
			<-start
			results[i], errs[i] = renewal.Renew(context.Background(), renewal.Request{Addr: g.Addr, TLS: cfg, Name: "bot", Files: files, Current: cur})
		})
	}
	close(start)
	wg.Wait()
	renewed := 0
	for i := range renewers {
		if errs[i] != nil {
			t.Fatalf("renewer %d: %v", i, errs[i])
		}
		if !results[i].Adopted {
			renewed++
		}
	}
	if renewed != 1 {
		t.Errorf("%d renewers asked the gateway; want 1, the others adopting its pair", renewed)
	}
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]pki.CertState{}
	for _, c := range list {
		state[c.Serial] = c.State
	}
	for i, r := range results {
		serial := pki.FormatSerial(r.KeyPair.Leaf.SerialNumber)
		if state[serial] != pki.StateActive {
			t.Errorf("renewer %d holds certificate %s, which is %s", i, serial, state[serial])
		}
	}
	kp, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := kp.Leaf
	if serial := pki.FormatSerial(leaf.SerialNumber); state[serial] != pki.StateActive {
		t.Errorf("the files hold certificate %s, which is %s", serial, state[serial])
	}
	if runtime.GOOS != "windows" {
		if _, err := os.Stat(files.Cert + renewal.LockSuffix); err == nil {
			t.Errorf("a lock file was left in the certificate directory; the directory itself is locked")
		}
	}
}
