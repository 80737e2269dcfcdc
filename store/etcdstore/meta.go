package etcdstore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/pki"
)

// metaKey names, under the prefix, the marker that says a nefia store
// exists there. It is created once, explicitly ('nefia mtls store migrate
// --to etcd'), never implied by a first write: an empty revocation set is
// only the truth when the store it belongs to exists. A prefix that was
// never created, was deleted, or is mistyped has no marker, and every
// operation and every gateway view refuses it (fail closed, issue 15).
const metaKey = "meta"

// FormatVersion is the store layout the marker records: 1 is issued/,
// revoked/, revoked-last, names/ (the per-name index) and crl-number.
const FormatVersion = 1

// ErrNoStore is wrapped by every operation under a prefix that holds no
// store marker: refusing is the only safe answer, since an absent
// revocation set reads as "nothing revoked".
var ErrNoStore = errors.New("etcdstore: no nefia store")

// Meta is the marker's value.
type Meta struct {
	// StoreID tells stores apart in logs (a gateway pointed at another
	// fleet's prefix).
	StoreID   string    `json:"store_id"`
	Format    int       `json:"format"`
	CreatedAt time.Time `json:"created_at"`
	// CAFingerprint is the SHA-256 of the fleet's CA certificate
	// (pki.Fingerprint), recorded when the store is created for a CA
	// (CreateWithCA); empty in a store created before it was recorded,
	// until a migrate from a host with a CA records it.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

func (s *Store) metaKey() string { return s.prefix + metaKey }

// noStore is the error of a prefix without marker: it names the prefix
// and the command that creates the store, and wraps
// pki.ErrRevocationUnavailable so handshakes and the CLI fail closed.
func noStore(prefix string) error {
	return fmt.Errorf("%w: %w at etcd prefix %s (key %s%s is missing: %w): create it with 'nefia mtls store migrate --to etcd', or check mcp.mtls.store.etcd.prefix",
		pki.ErrRevocationUnavailable, ErrNoStore, prefix, prefix, metaKey, pki.ErrSharedStoreAbsent)
}

// metaExists is the transaction guard every write carries.
func (s *Store) metaExists() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.metaKey()), ">", 0)
}

// Create creates the store under the prefix, if it does not exist yet,
// in one transaction; created says whether this call did. Existing
// entries under the prefix are kept (and indexed by name), so running it
// twice changes nothing. It records no CA: see CreateWithCA.
func (s *Store) Create(now time.Time) (m Meta, created bool, err error) {
	return s.CreateWithCA(now, "")
}

// CreateWithCA is Create for a host whose CA certificate has fingerprint
// ca (pki.Fingerprint): a new store records it as its fleet's CA; an
// existing one that records another is refused (pki.ErrForeignCA: a host
// with a CA of its own must not join the fleet's store), and one created
// before the CA was recorded is given it.
func (s *Store) CreateWithCA(now time.Time, ca string) (m Meta, created bool, err error) {
	m, raw, created, err := s.createMarker(now, ca)
	if err != nil {
		return Meta{}, false, err
	}
	if !created {
		if m, err = s.adoptCA(m, raw, ca); err != nil {
			return Meta{}, false, err
		}
	}
	if err := s.indexNames(); err != nil {
		return m, created, err
	}
	return m, created, nil
}

// CreateShared is CreateWithCA for pki.Store.Init on a host without a CA
// (see pki's sharedCreator): the first init of a new fleet creates the
// store, recording the CA it is about to write, so that a second host's
// init is refused rather than given a CA of its own. created says whether
// this call did. A store that exists is left as it is, whatever CA it
// records or not: the caller refuses and never writes its CA, so it must
// not become the fleet's.
func (s *Store) CreateShared(now time.Time, ca string) (created bool, err error) {
	if _, _, created, err = s.createMarker(now, ca); err != nil || !created {
		return false, err
	}
	return true, s.indexNames()
}

// createMarker writes a new marker recording ca unless one exists, in one
// transaction; it returns the marker under the prefix, and as stored when
// it existed (for adoptCA).
func (s *Store) createMarker(now time.Time, ca string) (m Meta, raw []byte, created bool, err error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return Meta{}, nil, false, fmt.Errorf("etcdstore: store id: %w", err)
	}
	m = Meta{StoreID: hex.EncodeToString(id), Format: FormatVersion, CreatedAt: now.UTC(), CAFingerprint: ca}
	data, err := json.Marshal(m)
	if err != nil {
		return Meta{}, nil, false, fmt.Errorf("etcdstore: encode the store marker: %w", err)
	}
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Txn(cx).
		If(clientv3.Compare(clientv3.CreateRevision(s.metaKey()), "=", 0)).
		Then(clientv3.OpPut(s.metaKey(), string(data))).
		Else(clientv3.OpGet(s.metaKey())).
		Commit()
	if err != nil {
		return Meta{}, nil, false, unavailable("create the store marker "+s.metaKey(), err)
	}
	if resp.Succeeded {
		return m, nil, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) != 1 {
		return Meta{}, nil, false, noStore(s.prefix)
	}
	m, err = decodeMeta(s.metaKey(), kvs[0].Value)
	return m, kvs[0].Value, false, err
}

// adoptCA checks the existing marker m (raw, as stored) against the CA
// fingerprint ca of the caller: another CA is pki.ErrForeignCA; no CA
// recorded yet (a store created before) records ca, in a transaction that
// fails if the marker changed meanwhile. An empty ca checks nothing.
func (s *Store) adoptCA(m Meta, raw []byte, ca string) (Meta, error) {
	switch {
	case ca == "" || m.CAFingerprint == ca:
		return m, nil
	case m.CAFingerprint != "":
		return Meta{}, foreignCA(s.prefix, m.CAFingerprint, ca)
	}
	m.CAFingerprint = ca
	data, err := json.Marshal(m)
	if err != nil {
		return Meta{}, fmt.Errorf("etcdstore: encode the store marker: %w", err)
	}
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Txn(cx).
		If(clientv3.Compare(clientv3.Value(s.metaKey()), "=", string(raw))).
		Then(clientv3.OpPut(s.metaKey(), string(data))).
		Commit()
	if err != nil {
		return Meta{}, unavailable("record the CA in the store marker "+s.metaKey(), err)
	}
	if !resp.Succeeded {
		return Meta{}, fmt.Errorf("%w: the store marker %s changed while its CA was being recorded; run the command again", pki.ErrRevocationUnavailable, s.metaKey())
	}
	return m, nil
}

// foreignCA is the refusal of a host whose CA (ours) is not the one the
// store at prefix records (theirs).
func foreignCA(prefix, theirs, ours string) error {
	return fmt.Errorf("%w: the store at etcd prefix %s records CA sha256:%s…, this host's is sha256:%s…; nothing was recorded. "+
		"Copy the fleet's CA files to this host, or use another mcp.mtls.store.etcd.prefix for a fleet of this CA",
		pki.ErrForeignCA, prefix, short(theirs), short(ours))
}

func short(fp string) string { return fp[:min(len(fp), 16)] }

// CheckCA fails, wrapping pki.ErrForeignCA, when the store records a CA
// other than the one of fingerprint ca (pki's caChecker: issuance asks
// first). A store that records none (created before the CA was recorded:
// every store of an upgraded fleet) records ca, as a migrate into it
// would: otherwise it would pass every CA for good, since an upgraded
// fleet never migrates again. The marker is read each time (one
// linearizable read): a store deleted and created again under the prefix
// may record another CA.
func (s *Store) CheckCA(ca string) error {
	m, raw, err := s.readMeta()
	if err != nil {
		return err
	}
	_, err = s.adoptCA(m, raw, ca)
	if err != nil && m.CAFingerprint == "" {
		// Another host's first issuance may have recorded one
		// meanwhile: decide on what is recorded now.
		if now, nowRaw, merr := s.readMeta(); merr == nil && now.CAFingerprint != "" {
			_, err = s.adoptCA(now, nowRaw, ca)
		}
	}
	return err
}

func decodeMeta(key string, value []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(value, &m); err != nil {
		return Meta{}, fmt.Errorf("%w: etcd key %s: %v", pki.ErrCorruptState, key, err)
	}
	if m.Format != FormatVersion {
		return Meta{}, fmt.Errorf("%w: etcd key %s: store format %d, this nefia knows %d", pki.ErrCorruptState, key, m.Format, FormatVersion)
	}
	return m, nil
}

// Meta reads the marker with a linearizable request: ErrNoStore (wrapped,
// naming the prefix) when there is none.
func (s *Store) Meta() (Meta, error) {
	m, _, err := s.readMeta()
	return m, err
}

// readMeta is Meta, with the marker as stored (for adoptCA's
// compare-and-swap).
func (s *Store) readMeta() (Meta, []byte, error) {
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Get(clientv3.WithRequireLeader(cx), s.metaKey())
	if err != nil {
		return Meta{}, nil, unavailable("read the store marker", err)
	}
	if len(resp.Kvs) == 0 {
		return Meta{}, nil, noStore(s.prefix)
	}
	m, err := decodeMeta(s.metaKey(), resp.Kvs[0].Value)
	return m, resp.Kvs[0].Value, err
}
