// Package fleettest starts several nefia gateways sharing one CA and one
// etcd store (internal/etcdtest), for the tests and benchmarks of issue 15:
// real gateways, real TLS, a real etcd cluster.
package fleettest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/internal/etcdtest"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/store/etcdstore"
)

// Prefix is the etcd key prefix the fleet's gateways share.
const Prefix = "/nefia-test/"

// WaitLimit bounds every wait of this package.
const WaitLimit = 15 * time.Second

// Member is one nefia gateway of a fleet sharing an etcd store.
type Member struct {
	GW      *servertest.Gateway
	Store   *pki.Store
	Watcher *etcdstore.Watcher
}

// Options shape a fleet.
type Options struct {
	Gateways int
	// MaxStale is mcp.mtls.store.max_staleness.
	MaxStale time.Duration
	// Endpoints, when set, gives gateway i its etcd endpoints (default:
	// every member).
	Endpoints func(i int) []string
	// NoCAKey lists gateways deployed without the CA key.
	NoCAKey map[int]bool
	// NoCA lists gateways whose state directory holds neither CA file:
	// they serve with the CA certificate from elsewhere (as
	// mcp.mtls.ca_cert_file points to), like gateway B of the README.
	NoCA map[int]bool
	// Prefix is the etcd prefix the gateways use (default Prefix).
	Prefix string
	// NoCreate leaves the store uncreated (no marker): the gateways start
	// without waiting for their view, which cannot load.
	NoCreate bool
	// Poll is the gateway's revocation poll (default 200ms, the
	// gateway's); the watch notifies the gateway at once, so tests set it
	// long to prove the notification does the work.
	Poll time.Duration
}

// Start starts gateways sharing one CA (files copied, as a deployment
// distributes them) and one etcd store, each with its watcher loaded.
func Start(t testing.TB, c *etcdtest.Cluster, o Options) []Member {
	t.Helper()
	if o.Poll == 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.Prefix == "" {
		o.Prefix = Prefix
	}
	base := pkitest.NewStore(t)
	var out []Member
	for i := range o.Gateways {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile} {
			if (f == pki.CAKeyFile && (o.NoCAKey[i] || o.NoCA[i])) || (f == pki.CACertFile && o.NoCA[i]) {
				continue
			}
			copyFile(t, base.Path(f), filepath.Join(dir, f))
		}
		eps := c.Endpoints()
		if o.Endpoints != nil {
			eps = o.Endpoints(i)
		}
		cli, err := etcdstore.Dial(config.Etcd{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		es := etcdstore.New(cli, o.Prefix)
		if !o.NoCreate {
			if _, _, err := es.Create(time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		store := pki.NewStore(dir, pki.WithRecords(es))
		w := etcdstore.NewWatcher(cli, o.Prefix, o.MaxStale, testLogger(t, fmt.Sprintf("gw%d", i)))
		es.Attach(w) // status reports the view's staleness, as on a gateway
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		if !o.NoCreate {
			WaitFor(t, "gateway's view loaded", func() bool { return w.Refresh() == nil })
		}
		gw := servertest.StartWithStore(t, store, func(g *server.GatewayOptions) {
			if o.NoCA[i] {
				g.CACertFile = base.Path(pki.CACertFile)
			}
			g.Revocations = w
			g.RevocationPoll = o.Poll
		})
		out = append(out, Member{GW: gw, Store: store, Watcher: w})
	}
	return out
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("gateway", name, "test", t.Name())
}

// WaitFor polls cond until it holds, failing the test after WaitLimit;
// it returns how long that took.
func WaitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > WaitLimit {
			t.Fatalf("%s: not within %s", what, WaitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// Session opens a raw MCP session and proves it live with a ping.
func Session(t testing.TB, gw *servertest.Gateway, kp tls.Certificate) net.Conn {
	t.Helper()
	conn, err := gw.Dial(gw.ClientConfig(&kp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := Ping(conn); err != nil {
		t.Fatalf("session on %s not live: %v", gw.Addr, err)
	}
	return conn
}

// Ping sends a ping on a raw session and waits for the answer.
func Ping(conn net.Conn) error {
	if _, err := fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	_, err := bufio.NewReader(conn).ReadString('\n')
	return err
}

// Closed waits until the peer closes conn and says how long that took.
func Closed(conn net.Conn, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, fmt.Errorf("session still open after %s", limit)
	}
	return time.Since(start), nil
}
