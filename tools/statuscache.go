package tools

import (
	"slices"
	"sync"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/pki"
)

// statusMaxAge bounds how stale a cached report may be: client counts and
// expiry warnings move with the clock even when no file changes.
const statusMaxAge = time.Second

// maxRenders bounds the rendered responses kept for one report (one per
// caller and connection count): a peer opening sessions cannot grow it
// without limit.
const maxRenders = 256

// statusCache keeps the last status report while none of the files it was
// built from changed. Building one parses the config, two certificates, two
// keys and two JSON stores and verifies a chain (hundreds of µs). Agents
// poll status, so this is a hot path: whether a file changed is asked of a
// directory watch (one non-blocking read, exact: atomicfile.Watch), and
// only when it reports something, or where there is none, of the files
// themselves (one stat each, as before issue 16). Each caller's response
// (its text and structured content) is rendered once per report.
type statusCache struct {
	mu       sync.Mutex
	watch    *atomicfile.Watch
	noWatch  bool // the watch could not be set up or broke: stat every call
	versions []atomicfile.Version
	built    time.Time
	report   StatusReport
	gen      uint64 // counts reports built, so renders know theirs
	renders  map[renderKey]rendered
}

// renderKey is everything a response depends on besides the report.
type renderKey struct {
	gen         uint64
	connections int // -1 in stdio mode
	caller      identity.Agent
	known       bool
}

// rendered is one caller's response: its structured content encoded once
// (a jsonrpc.Encoded encodes to the same bytes as the report itself, and
// the stream transport appends it as it is) and its text.
type rendered struct {
	structured any // a jsonrpc.Encoded, boxed once here rather than per call
	text       string
}

// statusFiles are the inputs of a report besides the clock.
func statusFiles(store *pki.Store, configPath string) []string {
	return []string{
		configPath, store.Dir(),
		store.Path(pki.CACertFile), store.Path(pki.CAKeyFile),
		store.Path(pki.ServerCertFile), store.Path(pki.ServerKeyFile),
		store.Path(pki.IssuedFile), store.Path(pki.RevokedFile),
		store.Path(pki.RevokedLogFile), // revocations since the store was last written (issue 16)
	}
}

// get returns the current report and its generation, rebuilding it when
// an input changed or the cached one is older than statusMaxAge. The
// returned report must not be modified in place (its slices are shared);
// copy the struct to add fields.
func (c *statusCache) get(store *pki.Store, configPath string, now time.Time) (StatusReport, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := c.versions != nil && now.Sub(c.built) < statusMaxAge && now.After(c.built)
	if fresh && c.watch != nil {
		changed, err := c.watch.Changed()
		if err == nil && !changed {
			return c.report, c.gen
		}
		if err != nil {
			c.watch, c.noWatch = nil, true
		}
	}
	paths := statusFiles(store, configPath)
	if c.watch == nil && !c.noWatch {
		// Set up before the files are statted below, so that no change
		// after the stat can go unreported.
		w, err := atomicfile.NewWatch(paths...)
		c.watch, c.noWatch = w, err != nil
	}
	versions := make([]atomicfile.Version, len(paths))
	for i, p := range paths {
		versions[i], _ = atomicfile.VersionOf(p) // a missing file is a version too
	}
	if fresh && slices.Equal(versions, c.versions) {
		return c.report, c.gen
	}
	cfg, cfgErr := config.Load(configPath)
	if cfgErr != nil {
		cfg = config.Loaded{Config: config.Default(), Path: configPath}
	}
	c.report = BuildStatus(store, cfg, cfgErr)
	c.versions, c.built = versions, now
	c.gen++
	clear(c.renders)
	return c.report, c.gen
}

// render returns the response for key, made by build the first time.
func (c *statusCache) render(key renderKey, build func() (rendered, error)) (rendered, error) {
	c.mu.Lock()
	out, ok := c.renders[key]
	c.mu.Unlock()
	if ok {
		return out, nil
	}
	out, err := build()
	if err != nil {
		return out, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if key.gen == c.gen {
		if c.renders == nil || len(c.renders) >= maxRenders {
			c.renders = make(map[renderKey]rendered)
		}
		c.renders[key] = out
	}
	return out, nil
}
