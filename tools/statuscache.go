package tools

import (
	"slices"
	"sync"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/pki"
)

// statusMaxAge bounds how stale a cached report may be: client counts and
// expiry warnings move with the clock even when no file changes.
const statusMaxAge = time.Second

// statusCache keeps the last status report while none of the files it was
// built from changed. Building one parses the config, two certificates, two
// keys and two JSON stores and verifies a chain (hundreds of µs); checking
// the files costs one stat each. Agents poll status, so this is a hot path.
type statusCache struct {
	mu       sync.Mutex
	versions []atomicfile.Version
	built    time.Time
	report   StatusReport
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

// get returns the current report, rebuilding it when an input changed or the
// cached one is older than statusMaxAge. The returned report must not be
// modified in place (its slices are shared); copy the struct to add fields.
func (c *statusCache) get(store *pki.Store, configPath string, now time.Time) StatusReport {
	paths := statusFiles(store, configPath)
	versions := make([]atomicfile.Version, len(paths))
	for i, p := range paths {
		versions[i], _ = atomicfile.VersionOf(p) // a missing file is a version too
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.versions != nil && now.Sub(c.built) < statusMaxAge && now.After(c.built) && slices.Equal(versions, c.versions) {
		return c.report
	}
	cfg, cfgErr := config.Load(configPath)
	if cfgErr != nil {
		cfg = config.Loaded{Config: config.Default(), Path: configPath}
	}
	c.report = BuildStatus(store, cfg, cfgErr)
	c.versions, c.built = versions, now
	return c.report
}
