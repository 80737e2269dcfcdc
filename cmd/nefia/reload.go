package main

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/upstream"
)

// configPollInterval is how often `mcp serve` stats nefia.yaml to notice an
// edit (issue 12 item 7): a stat a second costs nothing and needs no
// platform file-watching API.
const configPollInterval = time.Second

// reloader applies edits of nefia.yaml to a running `mcp serve` without a
// restart: mcp.policy (through setPolicy, the authorizer of the gateway or
// of the stdio server) and mcp.upstreams (Manager.Update). A file that does
// not load, or whose policy does not build, leaves everything running as
// it was and logs one line naming the file and the error; so does a
// missing or empty file (config.ErrNoConfig), which at start would mean
// the defaults. Live sessions
// keep their identity; each call is decided by the policy in force when it
// arrives, so a tool a session may no longer call is refused from its next
// call on. Other keys (mcp.mtls.*, audit.*) need a restart; a change to
// them is logged as such.
type reloader struct {
	path string
	s    *session
	log  *slog.Logger
	ups  *upstream.Manager
	// signed is true once ups has an assertion signer: the key is created
	// on first use, so a gateway started without upstreams loads it when
	// a reload adds the first one.
	signed bool
	// running is the configuration in force, as the file says (without
	// command-line overrides such as --listen).
	running config.Config
	// last and lastErr are the file's version when it was last read (or
	// could not be stat'ed): an edit made while the upstreams start, before
	// watching begins, is still seen as a change.
	last    atomicfile.Version
	lastErr error
}

// newReloader returns the reloader of a serve that started with cfg, the
// file's configuration, read just before.
func newReloader(s *session, cfg config.Config, ups *upstream.Manager) *reloader {
	r := &reloader{path: s.configPath, s: s, log: s.log, ups: ups, running: cfg, signed: len(cfg.MCP.Upstreams) > 0}
	r.last, r.lastErr = r.version()
	return r
}

// version is the file's atomicfile.Version; a missing file is a version
// too (the zero one), which reload refuses (config.Reload): a running
// gateway does not fall back to the defaults.
func (r *reloader) version() (atomicfile.Version, error) {
	v, err := atomicfile.VersionOf(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return atomicfile.Version{}, nil
	}
	return v, err
}

// start watches the file (every configPollInterval) and SIGHUP until ctx
// ends or the returned stop is called, applying each change with
// setPolicy for the policy. stop waits for a reload in progress.
func (r *reloader) start(ctx context.Context, setPolicy func(*policy.Policy)) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.watch(ctx, configPollInterval, hup, func() { r.reload(setPolicy) })
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

// watch calls reload on every signal from hup and whenever the file's
// version (atomicfile.VersionOf: device, inode, size, times) differs from
// the last one seen; one goroutine, so reloads never overlap.
func (r *reloader) watch(ctx context.Context, every time.Duration, hup <-chan os.Signal, reload func()) {
	version := r.version
	last, lastErr := r.last, r.lastErr
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("SIGHUP: reloading the configuration", "file", r.path)
			last, lastErr = version()
			reload()
		case <-tick.C:
			v, err := version()
			if err != nil {
				if lastErr == nil || err.Error() != lastErr.Error() {
					r.log.Error("configuration not reloaded; keeping the running one", "file", r.path, "err", errorLine(err))
				}
				lastErr = err
				continue
			}
			if v == last && lastErr == nil {
				continue
			}
			last, lastErr = v, nil
			reload()
		}
	}
}

// reload loads the file and, if it loads, applies its policy and
// upstreams; otherwise it keeps the running configuration and logs why.
func (r *reloader) reload(setPolicy func(*policy.Policy)) {
	keep := func(err error) {
		r.log.Error("configuration not reloaded; keeping the running one", "file", r.path, "err", errorLine(err))
	}
	// Not config.Load: a missing or empty file is not the defaults here.
	loaded, err := config.Reload(r.path)
	if err != nil {
		keep(err)
		return
	}
	cfg := loaded.Config
	pol, err := loadPolicy(cfg)
	if err != nil {
		keep(err)
		return
	}
	if !r.signed && len(cfg.MCP.Upstreams) > 0 {
		signer, err := upstream.LoadSigner(r.s.store)
		if err != nil {
			keep(err)
			return
		}
		r.ups.SetSigner(signer)
		r.signed = true
	}
	if err := r.ups.Update(cfg.MCP.Upstreams); err != nil {
		keep(err)
		return
	}
	setPolicy(pol)
	if !reflect.DeepEqual(cfg.MCP.MTLS, r.running.MCP.MTLS) || !reflect.DeepEqual(cfg.Audit, r.running.Audit) ||
		!reflect.DeepEqual(cfg.MCP.Metrics, r.running.MCP.Metrics) {
		r.log.Warn("configuration reloaded, but mcp.mtls, mcp.metrics and audit changes take effect on restart", "file", r.path)
	}
	r.running = cfg
	r.log.Info("configuration reloaded", "file", r.path, "policy", pol.Source(), "rules", len(pol.Rules()),
		"upstreams", len(cfg.MCP.Upstreams))
}
