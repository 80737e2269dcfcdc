package main

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
)

// TestConcurrentRevokesFromSeparateProcesses runs two groups of 50 nefia
// processes at once, each revoking a different serial: the file lock must
// serialize their read-modify-writes so that none is lost.
func TestConcurrentRevokesFromSeparateProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns 100 processes")
	}
	c := newCLI(t)
	c.mustRun("mtls", "init")
	store := pki.NewStore(c.stateDir)
	const groups, perGroup = 2, 50
	serials := make([]string, groups*perGroup)
	for i := range serials {
		iss, err := store.Issue(pki.IssueRequest{Name: fmt.Sprintf("agent-%d", i), Duration: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		serials[i] = iss.Serial
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(serials))
	for g := range groups {
		for i := range perGroup {
			serial := serials[g*perGroup+i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(nefiaBin, "mtls", "revoke", "--serial", serial, "--reason", fmt.Sprintf("group %d", g))
				cmd.Env = append(os.Environ(), "NEFIA_STATE_DIR="+c.stateDir, "NEFIA_CONFIG="+c.config)
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("revoke %s: %v\n%s", serial, err, out)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	revs, err := store.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range revs {
		got[r.Serial] = true
	}
	for _, s := range serials {
		if !got[s] {
			t.Errorf("revocation of %s was lost", s)
		}
	}
	if len(revs) != len(serials) {
		t.Errorf("store holds %d revocations, want %d", len(revs), len(serials))
	}
}
