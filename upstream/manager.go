package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/config"
)

// States of an upstream, as Status reports them.
const (
	StateStarting = "starting"
	StateUp       = "up"
	StateDown     = "down"
	StateStopped  = "stopped"
)

// Backoff bounds of restarts: an exited or unreachable upstream is retried
// after MinBackoff, doubling up to MaxBackoff, so a crashing server costs
// little and a recovered one is back within half a minute.
const (
	MinBackoff = time.Second
	MaxBackoff = 30 * time.Second
)

// Options configure a Manager.
type Options struct {
	// Upstreams is mcp.upstreams, already validated by config.
	Upstreams []config.Upstream
	// Signer signs identity assertions; nil sends none (the agent fields
	// in _meta and headers are still sent).
	Signer *Signer
	// Logger receives lifecycle events and stdio upstreams' stderr.
	Logger *slog.Logger
	// ClientVersion is reported to upstreams in clientInfo.
	ClientVersion string
	// StartWait bounds how long Register waits for the upstreams' first
	// tool lists, so a client connecting right after start sees them; a
	// slower upstream adds its tools later (with list_changed). Zero means
	// 10s.
	StartWait time.Duration
}

// Manager runs the configured upstreams and serves their tools on an MCP
// server: one supervisor per upstream connects, lists tools, registers
// proxies, and restarts the upstream when it exits.
type Manager struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu sync.Mutex // guards what follows; held across Update
	// ups are the running (or, before Register, configured) upstreams in
	// configuration order.
	ups []*upstream
	// srv is the server given to Register; nil before.
	srv         *mcpserver.MCPServer
	statusAdded bool
	// idx routes resource reads across upstreams (items.go).
	idx *index
}

// New returns a Manager for opts; nothing starts before Register.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ClientVersion == "" {
		opts.ClientVersion = "dev"
	}
	if opts.StartWait == 0 {
		opts.StartWait = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, idx: newIndex()}
	for _, c := range opts.Upstreams {
		m.ups = append(m.ups, m.newUpstream(c))
	}
	m.idx.setUpstreams(m.ups)
	return m
}

func (m *Manager) newUpstream(c config.Upstream) *upstream {
	return &upstream{
		cfg: c, signer: m.opts.Signer, version: m.opts.ClientVersion,
		log:     m.log.With(logKeyUpstream, c.Name),
		state:   StateStarting,
		relist:  make(chan struct{}, 1),
		started: make(chan struct{}),
		tools:   map[string]struct{}{},
		idx:     m.idx,
	}
}

// Register starts every upstream and adds their tools to srv as they are
// listed. It has the signature of server.GatewayOptions.Register, so the
// proxies are served behind the gateway's policy, identity and audit. It
// returns once each upstream has been tried once (or StartWait passed):
// an upstream that is down at start is not an error, it is retried.
func (m *Manager) Register(srv *mcpserver.MCPServer) error {
	if srv == nil {
		return errors.New("upstream: register: nil MCP server")
	}
	m.mu.Lock()
	if m.srv != nil {
		m.mu.Unlock()
		return errors.New("upstream: register: already registered; a Manager serves one MCP server")
	}
	m.srv = srv
	m.idx.mu.Lock()
	m.idx.srv = srv
	m.idx.mu.Unlock()
	// Clients learn capabilities once, at initialize, but upstreams list
	// resources and prompts later (and again after a restart or a reload,
	// which may add the first upstream): declare both, with list_changed,
	// whether or not upstreams are configured yet. Before serving, so
	// nothing reads them meanwhile. With none, the lists are empty.
	mcpserver.WithResourceCapabilities(false, true)(srv)
	mcpserver.WithPromptCapabilities(true)(srv)
	// Completions of their prompts' arguments and their templates'
	// variables are forwarded too (complete.go).
	mcpserver.WithCompletions()(srv)
	mcpserver.WithPromptCompletionProvider(completer{m.idx})(srv)
	mcpserver.WithResourceCompletionProvider(completer{m.idx})(srv)
	for _, u := range m.ups {
		m.start(u)
	}
	ups := slices.Clone(m.ups)
	m.mu.Unlock()
	wait := time.NewTimer(m.opts.StartWait)
	defer wait.Stop()
	for _, u := range ups {
		select {
		case <-u.started:
		case <-wait.C:
			return nil
		}
	}
	return nil
}

// start runs u's supervisor; m.mu is held and m.srv set.
func (m *Manager) start(u *upstream) {
	if !m.statusAdded {
		m.addStatusTool(m.srv)
		m.statusAdded = true
	}
	ctx, cancel := context.WithCancel(m.ctx)
	u.srv, u.cancel, u.done, u.runCtx = m.srv, cancel, make(chan struct{}), ctx
	m.wg.Go(func() {
		defer close(u.done)
		u.supervise(ctx)
		u.closeClients()
	})
}

// stop ends u's supervisor (and process); m.mu is held. Unless its
// replacement takes them over, its proxies are removed from the server.
func (m *Manager) stop(u *upstream, replacement *upstream) {
	u.cancel()
	<-u.done
	u.dropItems()
	names := u.proxiedTools()
	if replacement != nil {
		// Its first listing replaces them; until then they answer that
		// the upstream is down rather than vanishing and coming back.
		for _, n := range names {
			replacement.tools[n] = struct{}{}
		}
		return
	}
	if len(names) > 0 {
		m.srv.DeleteTools(names...)
	}
}

// Update makes the running upstreams those of ups, for a configuration
// reload: an entry whose configuration is unchanged keeps running
// untouched (its session, its process); a new one is started; a removed
// or changed one is stopped and its tools deleted (a changed one then
// starts again with its new configuration). Connected clients are sent
// tools/list_changed. It does not wait for new upstreams to come up.
func (m *Manager) Update(ups []config.Upstream) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return errors.New("upstream: update: manager closed")
	}
	old := make(map[string]*upstream, len(m.ups))
	for _, u := range m.ups {
		old[u.cfg.Name] = u
	}
	next := make([]*upstream, 0, len(ups))
	var fresh []*upstream
	for _, c := range ups {
		if u, ok := old[c.Name]; ok && reflect.DeepEqual(u.cfg, c) {
			next = append(next, u)
			delete(old, c.Name)
			continue
		}
		u := m.newUpstream(c)
		next, fresh = append(next, u), append(fresh, u)
	}
	// Before the new ones start, so that their templates are published.
	m.idx.setUpstreams(next)
	if m.srv != nil {
		byName := make(map[string]*upstream, len(fresh))
		for _, u := range fresh {
			byName[u.cfg.Name] = u
		}
		for name, u := range old { // removed or changed
			u.log.Info("upstream removed or changed by a configuration update; stopping it")
			m.stop(u, byName[name])
		}
		for _, u := range fresh {
			m.start(u)
		}
	}
	m.ups = next
	if m.srv != nil {
		m.idx.publishAll() // the removed ones' are gone; the order may have changed
	}
	return nil
}

// SetSigner sets the signer of the upstreams started from now on (by
// Update): a gateway started without upstreams has no assertion key yet,
// and a reload that adds the first upstream creates it.
func (m *Manager) SetSigner(s *Signer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.Signer = s
}

// Close stops every upstream (stdio processes included) and waits for the
// supervisors; it is safe to call more than once.
func (m *Manager) Close() error {
	m.once.Do(func() {
		m.cancel()
		m.wg.Wait()
	})
	return nil
}

// Status is what operators see of one upstream.
type Status struct {
	Name      string    `json:"name"`
	Transport string    `json:"transport"` // stdio or http
	State     string    `json:"state"`
	Tools     int       `json:"tools"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// Sessions counts the open per-client sessions (session: per_client).
	Sessions int `json:"sessions,omitempty"`
}

// Status reports every upstream's state, in configuration order.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	ups := slices.Clone(m.ups)
	m.mu.Unlock()
	out := make([]Status, 0, len(ups))
	for _, u := range ups {
		out = append(out, u.status())
	}
	return out
}

// Tools returns the names of the proxies registered for the upstream
// called name, sorted; nil for an unknown name.
func (m *Manager) Tools(name string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range m.ups {
		if u.cfg.Name == name {
			return u.proxiedTools()
		}
	}
	return nil
}

// logKeyUpstream is the structured-log key naming the upstream.
const logKeyUpstream = "upstream"

// conn is one live session with an upstream: its client and, for a stdio
// upstream, the process behind it.
type conn struct {
	c *client.Client
	// http sends the forwarded calls of a url upstream (httpcall.go); nil
	// for a command upstream, whose calls go on c's transport.
	http *httpCaller
	// done is closed when the session is over: the process exited or a
	// call found the transport broken.
	done   chan struct{}
	broken sync.Once
	err    error // why done was closed; read after done
	stop   func()
}

// fail ends the session with err, once.
func (c *conn) fail(err error) {
	c.broken.Do(func() {
		c.err = err
		close(c.done)
	})
}

// supervise keeps the upstream running until ctx ends: connect, serve,
// and after a failure wait the backoff and try again.
func (u *upstream) supervise(ctx context.Context) {
	var backoff time.Duration
	for {
		began := time.Now()
		cn, err := u.connect(ctx)
		if err == nil {
			err = u.serve(ctx, cn)
		}
		if ctx.Err() != nil {
			u.setState(StateStopped, nil)
			u.startOnce.Do(func() { close(u.started) })
			return
		}
		u.setState(StateDown, err)
		// After the state: Register's caller sees why it is down.
		u.startOnce.Do(func() { close(u.started) })
		backoff = nextBackoff(backoff, time.Since(began))
		u.log.Warn("upstream down; restarting", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			u.setState(StateStopped, nil)
			return
		case <-t.C:
		}
		u.mu.Lock()
		u.restarts++
		u.mu.Unlock()
	}
}

// nextBackoff is the wait before the next restart: MinBackoff after the
// first failure, or after a run longer than MaxBackoff (not a crash loop),
// else double the previous wait, at most MaxBackoff.
func nextBackoff(prev, ran time.Duration) time.Duration {
	if prev == 0 || ran > MaxBackoff {
		return MinBackoff
	}
	return min(prev*2, MaxBackoff)
}

// serve lists the tools of a fresh session, marks the upstream up and
// waits for the session to end, re-listing on list_changed.
func (u *upstream) serve(ctx context.Context, cn *conn) error {
	defer cn.stop()
	if err := u.listTools(ctx, cn); err != nil {
		return err
	}
	u.listItems(ctx, cn)
	u.mu.Lock()
	u.cur = cn
	u.mu.Unlock()
	u.setState(StateUp, nil)
	u.startOnce.Do(func() { close(u.started) })
	u.log.Info("upstream up", "tools", u.toolCount())
	defer func() {
		u.mu.Lock()
		u.cur = nil
		u.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-cn.done:
			return cn.err
		case <-u.relist:
			if err := u.listTools(ctx, cn); err != nil {
				if ctx.Err() != nil {
					return ctx.Err() // shutting down, not a failure
				}
				u.log.Warn("re-list tools after list_changed", "err", err)
				cn.fail(err)
				continue
			}
			u.listItems(ctx, cn)
		}
	}
}

func (u *upstream) setState(state string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.since = time.Now()
	}
	u.state = state
	if err != nil && !errors.Is(err, context.Canceled) {
		u.lastErr = err.Error()
	}
}

func (u *upstream) status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	tr := "stdio"
	if u.cfg.URL != "" {
		tr = "http"
	}
	return Status{Name: u.cfg.Name, Transport: tr, State: u.state, Tools: len(u.tools),
		Restarts: u.restarts, LastError: u.lastErr, Since: u.since, Sessions: u.clientSessionCount()}
}

func (u *upstream) toolCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.tools)
}

// downError says why the upstream cannot take a call right now.
func (u *upstream) downError() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == StateStarting || u.lastErr == "" {
		return fmt.Errorf("upstream %q is down (%s)", u.cfg.Name, u.state)
	}
	return fmt.Errorf("upstream %q is down: %s", u.cfg.Name, u.lastErr)
}
