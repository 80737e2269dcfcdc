// Package etcdstore keeps nefia's inventory and revocations in etcd, so
// several gateways share one truth (issue 15): one key per serial under a
// prefix, each created by a transaction that succeeds only if the key does
// not exist yet, so issuing never reuses a serial and revoking never reads
// or rewrites the other revocations.
//
// Keys, under the configured prefix:
//
//	<prefix>issued/<serial>   JSON pki.IssuedCert
//	<prefix>revoked/<serial>  JSON pki.Revocation
//	<prefix>revoked-last      the serial of the latest revocation
//	<prefix>names/<name>/<serial>  JSON pki.IssuedCert, the by-name index
//	<prefix>meta              the store marker (meta.go)
//	<prefix>crl-number        the last CRL number reserved (crl.go)
//
// Every operation requires the marker: a prefix without one is refused
// (ErrNoStore), never read as an empty store.
//
// revoked-last is written by the same transaction as every revocation:
// its ModRevision, read with a linearizable request, is the revision a
// gateway's view must have reached to be current (see Watcher).
//
// Store is the pki.Records of the CLI and the operations; Watcher is the
// gateway's in-memory revocation set, fed by a watch (see watch.go).
package etcdstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// Key sub-prefixes under the configured prefix.
const (
	issuedDir   = "issued/"
	revokedDir  = "revoked/"
	revokedLast = "revoked-last"
	namesDir    = "names/"
)

// opTimeout bounds one request: a CLI command or a tool call against an
// etcd that lost quorum fails with a clear error instead of hanging.
const opTimeout = 5 * time.Second

// pageSize is how many keys one range request returns when reading a whole
// directory: 100,000 revocations are read in pages, never in one response.
const pageSize = 5000

// autoSyncInterval is how often the member list is fetched when
// mcp.mtls.store.etcd.auto_sync is on.
const autoSyncInterval = 30 * time.Second

// Store is the etcd backend of pki.Records. It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	prefix string
	// view, once a gateway attached its Watcher, is what Health reports:
	// the view handshakes are judged by.
	view atomic.Pointer[Watcher]
}

// Attach makes Health report w's staleness: on a gateway, status says
// whether handshakes are being refused, and why.
func (s *Store) Attach(w *Watcher) { s.view.Store(w) }

// Dial connects to the configured etcd endpoints, exactly those: member
// auto-discovery happens only with auto_sync, because operators put
// proxies and load balancers in front of etcd and a client that wanders
// off to the members' own addresses breaks their network design. Relative
// TLS file paths are resolved by the caller.
func Dial(c config.Etcd) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          opTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(), // nefia logs what matters through slog
	}
	if c.AutoSync {
		cfg.AutoSyncInterval = autoSyncInterval
	}
	if c.CAFile != "" || c.CertFile != "" {
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect to %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}

func tlsConfig(c config.Etcd) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: mcp.mtls.store.etcd.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdstore: mcp.mtls.store.etcd.ca_file: no certificate found in %s", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: mcp.mtls.store.etcd.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// New returns the Store over cli under prefix (which ends in "/"). The
// caller keeps ownership of cli.
func New(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, prefix: prefix}
}

// Client returns the etcd client, for a Watcher sharing the connection.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) issuedKey(serial string) string  { return s.prefix + issuedDir + serial }
func (s *Store) revokedKey(serial string) string { return s.prefix + revokedDir + serial }

// nameDir is the by-name index directory of one certificate name; names
// cannot contain "/" (pki.ValidateName), so one name's directory never
// holds another's keys.
func (s *Store) nameDir(name string) string { return s.prefix + namesDir + name + "/" }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// unavailable wraps an etcd failure so every caller can tell "the store
// cannot be reached" from a refusal.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: etcd: %s: %w", pki.ErrRevocationUnavailable, what, err)
}

// AddIssued creates <prefix>issued/<serial> and its by-name index key
// <prefix>names/<name>/<serial> if, and only if, the serial is not
// recorded yet and the store exists, in one transaction (pki.Records).
func (s *Store) AddIssued(c pki.IssuedCert) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("etcdstore: encode %s: %w", c.Serial, err)
	}
	cx, cancel := ctx()
	defer cancel()
	key := s.issuedKey(c.Serial)
	resp, err := s.cli.Txn(cx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), s.metaExists()).
		Then(clientv3.OpPut(key, string(data)), clientv3.OpPut(s.nameDir(c.Name)+c.Serial, string(data))).
		Else(clientv3.OpGet(s.metaKey(), clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return unavailable("record issued certificate "+c.Serial, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().GetCount() == 0 {
			return noStore(s.prefix)
		}
		return fmt.Errorf("%w: %s", pki.ErrSerialTaken, c.Serial)
	}
	return nil
}

// AddRevocation creates <prefix>revoked/<serial> unless it exists, in one
// transaction that returns the existing record otherwise (pki.Records).
func (s *Store) AddRevocation(r pki.Revocation) (pki.Revocation, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return pki.Revocation{}, fmt.Errorf("etcdstore: encode %s: %w", r.Serial, err)
	}
	cx, cancel := ctx()
	defer cancel()
	key := s.revokedKey(r.Serial)
	resp, err := s.cli.Txn(cx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), s.metaExists()).
		Then(clientv3.OpPut(key, string(data)), clientv3.OpPut(s.prefix+revokedLast, r.Serial)).
		Else(clientv3.OpGet(key), clientv3.OpGet(s.metaKey(), clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return pki.Revocation{}, unavailable("record revocation of "+r.Serial, err)
	}
	if resp.Succeeded {
		return r, nil
	}
	if resp.Responses[1].GetResponseRange().GetCount() == 0 {
		return pki.Revocation{}, noStore(s.prefix)
	}
	var old pki.Revocation
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
		if err := json.Unmarshal(kvs[0].Value, &old); err != nil {
			return pki.Revocation{}, fmt.Errorf("%w: etcd key %s: %v", pki.ErrCorruptState, key, err)
		}
	}
	return old, pki.ErrAlreadyRevoked
}

// IssuedCert reads one inventory entry (pki.Records): one key, with the
// marker checked in the same transaction.
func (s *Store) IssuedCert(serial string) (pki.IssuedCert, bool, error) {
	kv, ok, err := s.getOne(s.issuedKey(serial), "read inventory entry "+serial)
	if err != nil || !ok {
		return pki.IssuedCert{}, false, err
	}
	var c pki.IssuedCert
	if err := json.Unmarshal(kv, &c); err != nil {
		return c, false, fmt.Errorf("%w: etcd key %s: %v", pki.ErrCorruptState, s.issuedKey(serial), err)
	}
	return c, true, nil
}

// RevocationOf reads the revocation of one canonical serial
// (pki.RevocationLookup): one key, never the whole set.
func (s *Store) RevocationOf(serial string) (pki.Revocation, bool, error) {
	kv, ok, err := s.getOne(s.revokedKey(serial), "read revocation of "+serial)
	if err != nil || !ok {
		return pki.Revocation{}, false, err
	}
	var r pki.Revocation
	if err := json.Unmarshal(kv, &r); err != nil {
		return r, false, fmt.Errorf("%w: etcd key %s: %v", pki.ErrCorruptState, s.revokedKey(serial), err)
	}
	return r, true, nil
}

// IssuedByName returns the inventory entries of one name from the by-name
// index (pki.NameLookup): a prefix read of that name's keys only.
func (s *Store) IssuedByName(name string) ([]pki.IssuedCert, error) {
	if _, err := s.Meta(); err != nil {
		return nil, err
	}
	return readAll[pki.IssuedCert](s.cli, s.nameDir(name))
}

// getOne reads key in a transaction that also confirms the marker.
func (s *Store) getOne(key, what string) ([]byte, bool, error) {
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Txn(cx).If(s.metaExists()).Then(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, false, unavailable(what, err)
	}
	if !resp.Succeeded {
		return nil, false, noStore(s.prefix)
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return nil, false, nil
	}
	return kvs[0].Value, true, nil
}

// Issued reads the whole inventory (pki.Records).
func (s *Store) Issued() ([]pki.IssuedCert, error) {
	if _, err := s.Meta(); err != nil {
		return nil, err
	}
	return readAll[pki.IssuedCert](s.cli, s.prefix+issuedDir)
}

// Revoked reads every revocation (pki.Records).
func (s *Store) Revoked() ([]pki.Revocation, error) {
	if _, err := s.Meta(); err != nil {
		return nil, err
	}
	return readAll[pki.Revocation](s.cli, s.prefix+revokedDir)
}

// readAll decodes every value under dir, in pages read at one revision.
func readAll[T any](cli *clientv3.Client, dir string) ([]T, error) {
	var out []T
	_, err := scan(context.Background(), cli, dir, false, 0, func(key string, value []byte) error {
		var v T
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("%w: etcd key %s: %v", pki.ErrCorruptState, key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// scan calls fn for every key under dir, page by page, all read at the
// revision of the first page (a consistent snapshot), or at rev when it is
// not 0, and returns that revision. keysOnly skips the values.
func scan(parent context.Context, cli *clientv3.Client, dir string, keysOnly bool, rev int64, fn func(key string, value []byte) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(dir)
	from := dir
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		cx, cancel := context.WithTimeout(parent, opTimeout)
		resp, err := cli.Get(cx, from, opts...)
		cancel()
		if err != nil {
			return 0, unavailable("read "+dir, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(string(kv.Key), kv.Value); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Health says whether the store can be trusted now; status reports its
// error. With a Watcher attached it is the view's staleness; otherwise a
// linearizable read of the store marker confirms that the cluster has a
// quorum and that the store exists.
func (s *Store) Health() error {
	if w := s.view.Load(); w != nil {
		return w.Refresh()
	}
	_, err := s.Meta()
	return err
}

// indexNames writes the by-name index key of every inventory entry that
// lacks one (a store filled before the index existed); Create calls it.
func (s *Store) indexNames() error {
	certs, err := readAll[pki.IssuedCert](s.cli, s.prefix+issuedDir)
	if err != nil {
		return err
	}
	for _, c := range certs {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("etcdstore: encode %s: %w", c.Serial, err)
		}
		key := s.nameDir(c.Name) + c.Serial
		cx, cancel := ctx()
		_, err = s.cli.Txn(cx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(data))).Commit()
		cancel()
		if err != nil {
			return unavailable("index "+c.Serial+" by name", err)
		}
	}
	return nil
}

// errNotSerial marks a key under a directory whose last element is not a
// canonical serial: never written by nefia.
var errNotSerial = errors.New("etcdstore: key is not a canonical serial")

// serialOf returns the canonical serial a key ends with.
func serialOf(key, dir string) (string, error) {
	serial := strings.TrimPrefix(key, dir)
	if canon, err := pki.ParseSerial(serial); err != nil || canon != serial {
		return "", fmt.Errorf("%w: %q", errNotSerial, key)
	}
	return serial, nil
}
