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
// twice changes nothing.
func (s *Store) Create(now time.Time) (m Meta, created bool, err error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return Meta{}, false, fmt.Errorf("etcdstore: store id: %w", err)
	}
	m = Meta{StoreID: hex.EncodeToString(id), Format: FormatVersion, CreatedAt: now.UTC()}
	data, err := json.Marshal(m)
	if err != nil {
		return Meta{}, false, fmt.Errorf("etcdstore: encode the store marker: %w", err)
	}
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Txn(cx).
		If(clientv3.Compare(clientv3.CreateRevision(s.metaKey()), "=", 0)).
		Then(clientv3.OpPut(s.metaKey(), string(data))).
		Else(clientv3.OpGet(s.metaKey())).
		Commit()
	if err != nil {
		return Meta{}, false, unavailable("create the store marker "+s.metaKey(), err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) != 1 {
			return Meta{}, false, noStore(s.prefix)
		}
		if m, err = decodeMeta(s.metaKey(), kvs[0].Value); err != nil {
			return Meta{}, false, err
		}
	}
	if err := s.indexNames(); err != nil {
		return m, resp.Succeeded, err
	}
	return m, resp.Succeeded, nil
}

// CreateShared is Create for pki.Store.Init on a host without a CA (see
// pki's sharedCreator): the first init of a new fleet creates the store,
// so that a second host's init is refused rather than given a CA of its
// own. created says whether this call did.
func (s *Store) CreateShared(now time.Time) (created bool, err error) {
	_, created, err = s.Create(now)
	return created, err
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
	cx, cancel := ctx()
	defer cancel()
	resp, err := s.cli.Get(clientv3.WithRequireLeader(cx), s.metaKey())
	if err != nil {
		return Meta{}, unavailable("read the store marker", err)
	}
	if len(resp.Kvs) == 0 {
		return Meta{}, noStore(s.prefix)
	}
	return decodeMeta(s.metaKey(), resp.Kvs[0].Value)
}
