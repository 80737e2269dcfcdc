package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
)

// fleetOnEtcd is a host that created the fleet's store at endpoints: its
// CA made by 'init' on the file backend, its store migrated to etcd, and
// its configuration switched to etcd.
func fleetOnEtcd(t *testing.T, endpoints []string) *cli {
	t.Helper()
	c := newCLI(t)
	c.mustRun("mtls", "init")
	writeStoreConfig(t, c, "file", endpoints)
	c.mustRun("mtls", "store", "migrate", "--to", "etcd")
	writeStoreConfig(t, c, "etcd", endpoints)
	return c
}

// writeStoreConfig writes nefia.yaml with the etcd section set and the
// given backend.
func writeStoreConfig(t *testing.T, c *cli, backend string, endpoints []string) {
	t.Helper()
	eps := ""
	if len(endpoints) > 0 {
		eps = "        endpoints: [" + strings.Join(endpoints, ", ") + "]\n"
	}
	y := "version: 1\nmcp:\n  gateway_id: cli-gw\n  mtls:\n    enabled: true\n    store:\n      backend: " + backend + "\n      etcd:\n" + eps + "        prefix: /cli-test/\n"
	if err := os.WriteFile(c.config, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
}

func certStates(t *testing.T, c *cli) map[string]string {
	t.Helper()
	var list []pki.ListedCert
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range list {
		out[l.Name] = string(l.State)
	}
	return out
}

// TestCLIOnEtcdAndMigrate: the CLI's issue-client, revoke, list and status
// work against the etcd backend once configured; 'nefia mtls store
// migrate --to etcd' copies the files into etcd, a second run adds
// nothing, and '--to file' brings what was done on etcd back (issue 15
// item 4).
func TestCLIOnEtcdAndMigrate(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.Start(t, etcdtest.Options{Members: 1})
	c := newCLI(t)
	c.mustRun("mtls", "init")
	issue := func(name string) string {
		var iss struct{ Serial string }
		if err := json.Unmarshal([]byte(c.mustRun("mtls", "issue-client", "--name", name, "--out-dir", c.outDir(), "--json")), &iss); err != nil {
			t.Fatal(err)
		}
		return iss.Serial
	}
	a := issue("a")
	b := issue("b")
	c.mustRun("mtls", "revoke", "--serial", a)

	// Before the store is created, the etcd backend refuses: one line
	// naming the prefix and the command that creates it (issue 15 fix 1).
	writeStoreConfig(t, c, "etcd", cluster.Endpoints())
	for _, args := range [][]string{{"mtls", "list"}, {"mtls", "revoke", "--serial", b}} {
		_, stderr, code := c.run(args...)
		if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 ||
			!strings.Contains(stderr, "/cli-test/") || !strings.Contains(stderr, "nefia mtls store migrate --to etcd") {
			t.Errorf("%v before the store exists: exit %d, %q; want one line naming /cli-test/ and the migrate command", args, code, stderr)
		}
	}

	writeStoreConfig(t, c, "file", cluster.Endpoints())
	for run, want := range []string{`"added_certificates": 2`, `"added_certificates": 0`} {
		out := c.mustRun("mtls", "store", "migrate", "--to", "etcd", "--json")
		if !strings.Contains(out, want) || !strings.Contains(out, `"verified": true`) {
			t.Fatalf("migrate run %d: %s, want %s", run+1, out, want)
		}
	}

	writeStoreConfig(t, c, "etcd", cluster.Endpoints())
	if got := certStates(t, c); got["a"] != "revoked" || got["b"] != "active" || len(got) != 2 {
		t.Fatalf("list on etcd after migrate: %v", got)
	}
	cs := issue("c")
	c.mustRun("mtls", "revoke", "--serial", b)
	if got := certStates(t, c); got["b"] != "revoked" || got["c"] != "active" || len(got) != 3 {
		t.Fatalf("list on etcd after issue and revoke: %v", got)
	}
	cli := cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, key := range []string{"/cli-test/issued/" + cs, "/cli-test/revoked/" + b} {
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Errorf("etcd key %s: %v, %d kvs", key, err, len(resp.Kvs))
		}
	}
	// The files were not touched by the etcd backend.
	data, err := os.ReadFile(filepath.Join(c.stateDir, pki.IssuedFile))
	if err != nil || strings.Contains(string(data), cs) {
		t.Errorf("the file inventory learned of %s while the backend was etcd (%v)", cs, err)
	}
	var st struct{ Problems []string }
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Problems {
		if strings.Contains(p, "revocation store") {
			t.Errorf("status on a healthy etcd: %s", p)
		}
	}

	// The CRL is signed from the revocations in etcd (issue 15 fix 3):
	// it lists both a (migrated) and b (revoked on etcd).
	stdout, stderr, code := c.run("mtls", "crl")
	blk, _ := pem.Decode([]byte(stdout))
	if code != 0 || blk == nil {
		t.Fatalf("mtls crl on etcd: exit %d, %q", code, stderr)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[pki.FormatSerial(e.SerialNumber)] = true
	}
	if !listed[a] || !listed[b] || len(listed) != 2 {
		t.Errorf("CRL from etcd lists %v, want %s and %s", listed, a, b)
	}
	// The audit records of the etcd-backed commands say which gateway
	// (here: which host's CLI) acted.
	trail, err := os.ReadFile(filepath.Join(c.stateDir, "audit", "audit.jsonl"))
	if err != nil || !strings.Contains(string(trail), `"event":"mtls.revoke"`) || strings.Count(string(trail), `"gateway_id":"cli-gw"`) < 2 {
		t.Errorf("audit trail lacks gateway_id cli-gw on the etcd-backed commands (%v)", err)
	}

	out := c.mustRun("mtls", "store", "migrate", "--to", "file", "--json")
	if !strings.Contains(out, `"added_certificates": 1`) || !strings.Contains(out, `"added_revocations": 1`) {
		t.Fatalf("migrate back: %s", out)
	}
	writeStoreConfig(t, c, "file", cluster.Endpoints())
	if got := certStates(t, c); got["a"] != "revoked" || got["b"] != "revoked" || got["c"] != "active" {
		t.Fatalf("list on files after migrating back: %v", got)
	}
}

// TestMigrateBadInput: a bad --to, or no etcd endpoints to migrate to, is
// a one-line usage error naming the flag or key, exit 2, nothing changed.
func TestMigrateBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown destination", args: []string{"--to", "consul"}, want: `--to "consul": want etcd or file`},
		{name: "no destination", args: nil, want: `--to "": want etcd or file`},
		{name: "no endpoints", args: []string{"--to", "etcd"}, want: "mcp.mtls.store.etcd.endpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t)
			c.mustRun("mtls", "init")
			before, _ := os.ReadFile(filepath.Join(c.stateDir, pki.IssuedFile))
			_, stderr, code := c.run(append([]string{"mtls", "store", "migrate"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line naming %q", code, stderr, tt.want)
			}
			if after, _ := os.ReadFile(filepath.Join(c.stateDir, pki.IssuedFile)); string(after) != string(before) {
				t.Error("the inventory changed")
			}
		})
	}
}

// TestInitForceRefusedOnEtcd: 'nefia mtls init --force' with the etcd
// backend would give this host a new CA while the shared store keeps the
// old one's certificates, splitting the fleet: refused in one line, exit 2,
// the CA files untouched and nothing archived (issue 15 fix 4).
func TestInitForceRefusedOnEtcd(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.Start(t, etcdtest.Options{Members: 1})
	c := fleetOnEtcd(t, cluster.Endpoints())
	before, err := os.ReadFile(filepath.Join(c.stateDir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(c.stateDir)
	_, stderr, code := c.run("mtls", "init", "--force")
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "splitting the fleet") {
		t.Errorf("init --force on etcd: exit %d, %q; want exit 2 and one line saying why", code, stderr)
	}
	after, err := os.ReadFile(filepath.Join(c.stateDir, pki.CACertFile))
	if err != nil || string(after) != string(before) {
		t.Errorf("the CA certificate changed (%v)", err)
	}
	if now, _ := os.ReadDir(c.stateDir); len(now) != len(entries) {
		t.Errorf("the state directory changed: %d entries, was %d", len(now), len(entries))
	}
}

// TestInitJoiningAFleetRefused: plain 'nefia mtls init' on a host without
// a CA whose backend is an etcd store that already exists would give this
// host a CA of its own beside the fleet's, splitting it silently: refused
// in one line, exit 2, no CA written. With no store under the prefix yet
// (a new fleet, to be migrated into), init goes ahead; with etcd out of
// reach, nobody can tell, and it refuses.
func TestInitJoiningAFleetRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		store    bool // the fleet's store exists under the prefix
		down     bool // etcd is not reachable
		wantCode int
		want     string
	}{
		{name: "store exists", store: true, wantCode: 2, want: "already serves a fleet with its own CA"},
		{name: "no store yet", wantCode: 0},
		{name: "etcd out of reach", down: true, wantCode: 3, want: "cannot tell whether the shared store already serves a fleet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cluster := etcdtest.Start(t, etcdtest.Options{Members: 1})
			if tt.store {
				fleetOnEtcd(t, cluster.Endpoints())
			}
			eps := cluster.Endpoints()
			if tt.down {
				eps = []string{"http://127.0.0.1:1"}
			}
			host := newCLI(t)
			if err := os.MkdirAll(filepath.Dir(host.config), 0o700); err != nil {
				t.Fatal(err)
			}
			writeStoreConfig(t, host, "etcd", eps)
			_, stderr, code := host.run("mtls", "init")
			_, caErr := os.Stat(filepath.Join(host.stateDir, pki.CACertFile))
			if tt.wantCode == 0 {
				if code != 0 || caErr != nil {
					t.Fatalf("init with no store yet: exit %d, %q, CA file: %v", code, stderr, caErr)
				}
				return
			}
			if code != tt.wantCode || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, tt.want) {
				t.Errorf("init: exit %d, %q; want exit %d and one line saying %q", code, stderr, tt.wantCode, tt.want)
			}
			if !errors.Is(caErr, fs.ErrNotExist) {
				t.Errorf("a CA certificate was written (%v)", caErr)
			}
		})
	}
}

// TestInitOnTwoHostsOfANewFleet: two hosts configured for the same etcd
// prefix, neither with a CA, no store under the prefix yet: the first
// 'nefia mtls init' creates the store (its marker), so the second is
// refused like a host joining an existing fleet, before it writes a CA.
// Before, only 'store migrate --to etcd' created the store, so every init
// run before the first migrate (a provisioning script initializing each
// host, then migrating) gave its host a CA of its own, and once the store
// existed each issued into it: the fleet split between CAs, silently.
func TestInitOnTwoHostsOfANewFleet(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.Start(t, etcdtest.Options{Members: 1})
	first, second := newCLI(t), newCLI(t)
	for _, h := range []*cli{first, second} {
		if err := os.MkdirAll(filepath.Dir(h.config), 0o700); err != nil {
			t.Fatal(err)
		}
		writeStoreConfig(t, h, "etcd", cluster.Endpoints())
	}
	first.mustRun("mtls", "init")
	_, stderr, code := second.run("mtls", "init")
	_, caErr := os.Stat(filepath.Join(second.stateDir, pki.CACertFile))
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "already serves a fleet with its own CA") ||
		!errors.Is(caErr, fs.ErrNotExist) {
		t.Fatalf("init on a second host after the first: exit %d, %q, CA file: %v; want exit 2, one line, no CA", code, stderr, caErr)
	}
	// The first host's records go into the store its init created.
	writeStoreConfig(t, first, "file", cluster.Endpoints())
	first.mustRun("mtls", "issue-client", "--name", "a", "--out-dir", first.outDir())
	first.mustRun("mtls", "store", "migrate", "--to", "etcd")
	writeStoreConfig(t, first, "etcd", cluster.Endpoints())
	if got := certStates(t, first); got["a"] != "active" || len(got) != 1 {
		t.Fatalf("list on etcd after migrate: %v", got)
	}
}

// TestForeignCAKeptOutOfTheFleetStore: the fleet's store records the CA
// of the host that created it; a host with a CA of its own (initialized
// on the file backend) can neither migrate its store into the fleet's
// prefix nor, switched to etcd, issue into it: exit 2, one line, nothing
// recorded. The fleet's own host still issues. Before, both went through
// and the fleet's inventory filled with certificates no gateway of it
// accepts.
func TestForeignCAKeptOutOfTheFleetStore(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.Start(t, etcdtest.Options{Members: 1})
	fleet := fleetOnEtcd(t, cluster.Endpoints())

	other := newCLI(t)
	other.mustRun("mtls", "init")
	other.mustRun("mtls", "issue-client", "--name", "stray", "--out-dir", other.outDir())
	writeStoreConfig(t, other, "file", cluster.Endpoints())
	for _, step := range []struct {
		name    string
		backend string
		args    []string
	}{
		{name: "migrate into the fleet's prefix", backend: "file", args: []string{"mtls", "store", "migrate", "--to", "etcd"}},
		{name: "issue into the fleet's store", backend: "etcd", args: []string{"mtls", "issue-client", "--name", "stray2", "--out-dir", other.outDir()}},
	} {
		writeStoreConfig(t, other, step.backend, cluster.Endpoints())
		_, stderr, code := other.run(step.args...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "another CA than this host's") {
			t.Errorf("%s: exit %d, %q; want exit 2 and one line naming the CA", step.name, code, stderr)
		}
	}
	fleet.mustRun("mtls", "issue-client", "--name", "own", "--out-dir", fleet.outDir())
	states := certStates(t, fleet)
	if _, ok := states["own"]; !ok {
		t.Errorf("the fleet's own issuance is missing: %v", states)
	}
	for _, name := range []string{"stray", "stray2"} {
		if _, ok := states[name]; ok {
			t.Errorf("%s, of another CA, reached the fleet's store: %v", name, states)
		}
	}
}
