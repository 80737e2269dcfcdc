package upstream

import (
	"context"
	"fmt"
	"sync"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
)

// connFor returns the upstream session a forwarded request of ctx's
// caller goes on: the shared one, or for session: per_client the caller's
// own (started on its first request); an error says why there is none.
func (u *upstream) connFor(ctx context.Context) (*conn, error) {
	u.mu.Lock()
	cn := u.cur
	u.mu.Unlock()
	if cn == nil {
		return nil, u.downError()
	}
	if u.cfg.Session != config.SessionPerClient {
		return cn, nil
	}
	return u.clientConn(ctx)
}

// clientSessions are the per_client upstream sessions of one upstream, by
// client session id. The shared session (u.cur) still lists tools and
// hears list_changed; calls, reads and gets go on these.
type clientSessions struct {
	mu     sync.Mutex
	closed bool // the upstream is stopped: no new sessions
	m      map[string]*clientConn
	// wg counts sessions being started or watched, so that stopping the
	// upstream waits for their processes; Add only under mu, while open.
	wg sync.WaitGroup
}

// clientConn is one client's upstream session; ready is closed once
// connect has returned (cn or err set), so that concurrent first requests
// of one client share one session.
type clientConn struct {
	ready chan struct{}
	cn    *conn
	err   error
	owner string // the client's certificate (clientOwner), for max_sessions_per_client
}

// clientConn returns the caller's own upstream session, starting it on
// its first request. The session ends when the client's does
// (identity.SessionDone), when it breaks, or when the upstream stops.
func (u *upstream) clientConn(ctx context.Context) (*conn, error) {
	id := clientSessionID(ctx)
	if id == "" {
		return nil, fmt.Errorf("upstream %q keeps one session per client (session: per_client) and this request has no MCP session; initialize one", u.cfg.Name)
	}
	for {
		u.cs.mu.Lock()
		if u.cs.closed {
			u.cs.mu.Unlock()
			return nil, u.downError()
		}
		cc, ok := u.cs.m[id]
		if !ok {
			break // start one, below, still holding u.cs.mu
		}
		u.cs.mu.Unlock()
		select {
		case <-cc.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if cc.err != nil {
			return nil, cc.err
		}
		select {
		case <-cc.cn.done: // broken; its watcher removes it, then retry
			u.forgetClient(id, cc)
			continue
		default:
			return cc.cn, nil
		}
	}
	owner := clientOwner(ctx)
	mine := 0
	for _, cc := range u.cs.m {
		if cc.owner == owner {
			mine++
		}
	}
	// The certificate's own cap first, so that one certificate never takes
	// every slot of max_sessions from the others.
	if limit := u.cfg.ClientSessionCap(); mine >= limit {
		u.cs.mu.Unlock()
		return nil, fmt.Errorf("upstream %q already has %d per-client sessions open for this certificate (max_sessions_per_client %d); end one (its HTTP session, or its connection) and try again",
			u.cfg.Name, mine, limit)
	}
	if n, limit := len(u.cs.m), u.cfg.SessionCap(); n >= limit {
		u.cs.mu.Unlock()
		return nil, fmt.Errorf("upstream %q already has %d per-client sessions open (max_sessions %d); try again once another client disconnects", u.cfg.Name, n, limit)
	}
	if u.cs.m == nil {
		u.cs.m = map[string]*clientConn{}
	}
	cc := &clientConn{ready: make(chan struct{}), owner: owner}
	u.cs.m[id] = cc
	u.cs.wg.Add(1)
	u.cs.mu.Unlock()

	// The session outlives this request: it runs under the supervisor's
	// context, and is stopped by its watcher.
	cc.cn, cc.err = u.connect(u.runCtx)
	if cc.err != nil {
		cc.err = fmt.Errorf("upstream %q: start a session for this client: %w", u.cfg.Name, cc.err)
		u.forgetClient(id, cc)
		close(cc.ready)
		u.cs.wg.Done()
		return nil, cc.err
	}
	close(cc.ready)
	u.log.Info("per-client upstream session started", "client_session", id)
	go func() {
		defer u.cs.wg.Done()
		u.watchClient(id, cc, identity.SessionDone(ctx))
	}()
	return cc.cn, nil
}

// watchClient stops a client's upstream session when the client's session
// ends (a nil done never does: stdio mode), when the upstream session
// breaks, or when the upstream stops.
func (u *upstream) watchClient(id string, cc *clientConn, done <-chan struct{}) {
	why := "client session ended"
	select {
	case <-done:
	case <-cc.cn.done:
		why = "upstream session ended"
		if cc.cn.err != nil {
			why += ": " + cc.cn.err.Error()
		}
	case <-u.runCtx.Done():
		why = "upstream stopped"
	}
	u.forgetClient(id, cc)
	cc.cn.stop()
	u.log.Info("per-client upstream session closed", "client_session", id, "reason", why)
}

// forgetClient removes cc from the table if it is still id's.
func (u *upstream) forgetClient(id string, cc *clientConn) {
	u.cs.mu.Lock()
	defer u.cs.mu.Unlock()
	if u.cs.m[id] == cc {
		delete(u.cs.m, id)
	}
}

// closeClients refuses new per-client sessions once the upstream is
// stopped, and waits for the watchers to stop the open ones (runCtx is
// done).
func (u *upstream) closeClients() {
	u.cs.mu.Lock()
	u.cs.closed = true
	u.cs.mu.Unlock()
	u.cs.wg.Wait()
}

// clientSessionCount counts the open per-client sessions, for Status.
func (u *upstream) clientSessionCount() int {
	u.cs.mu.Lock()
	defer u.cs.mu.Unlock()
	return len(u.cs.m)
}

// clientSessionID is the MCP session a request came on: mcp-go's client
// session (raw streams, HTTP sessions), else the one the transport put in
// the caller's identity.
func clientSessionID(ctx context.Context) string {
	if s := mcpserver.ClientSessionFromContext(ctx); s != nil && s.SessionID() != "" {
		return s.SessionID()
	}
	a, _ := identity.FromContext(ctx)
	return a.SessionID
}

// clientOwner is the certificate a request came with, as
// max_sessions_per_client counts sessions: its fingerprint, else its
// serial; "" for a caller without one (the local operator in stdio mode,
// which has one session anyway).
func clientOwner(ctx context.Context) string {
	a, _ := identity.FromContext(ctx)
	if a.Fingerprint != "" {
		return "sha256:" + a.Fingerprint
	}
	return a.Serial
}
