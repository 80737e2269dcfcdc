package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// MaxHosts bounds InitRequest.Hosts; a server certificate with more SANs
// than this is a mistake, not a deployment.
const MaxHosts = 100

// InitRequest asks for a new root CA and server certificate.
type InitRequest struct {
	// Hosts are the server certificate's SANs (at least one).
	Hosts []string
	// Force replaces an existing CA; its files are archived.
	Force bool
}

// InitResult is what Init did.
type InitResult struct {
	*pki.InitResult
	// ConfigFile is the nefia.yaml in which mcp.mtls.enabled was set.
	ConfigFile string
}

// Init creates the CA and the server certificate and sets
// mcp.mtls.enabled=true in the configuration, both inside the audited
// action. An existing CA without Force is pki.ErrCAExists, an invalid host
// an *InputError; a configuration that could not be updated after the CA
// was created is ErrNotEnabled (the result is returned with it).
func (s *Service) Init(ctx context.Context, actor identity.Agent, req InitRequest) (InitResult, error) {
	// Creating or replacing the CA decides who gets in at all: operators
	// only, whatever a policy lets a caller call.
	if actor.Role != pki.RoleOperator {
		return InitResult{}, fmt.Errorf("%w: only an operator may initialize or replace the CA (role %q); ask an operator", ErrPermission, actor.Role)
	}
	switch {
	case len(req.Hosts) == 0:
		return InitResult{}, inputErrf(FieldHosts, "%w: at least one DNS name or IP address is needed, e.g. localhost,127.0.0.1", pki.ErrInvalidHost)
	case len(req.Hosts) > MaxHosts:
		return InitResult{}, inputErrf(FieldHosts, "%w: %d entries; at most %d are accepted", pki.ErrInvalidHost, len(req.Hosts), MaxHosts)
	}
	out := InitResult{ConfigFile: s.ConfigPath}
	args := map[string]any{"hosts": req.Hosts, "force": req.Force}
	// Clients dial the configured listen address, so the server
	// certificate always covers its host (issue 13 item 3). A
	// configuration that does not load is left for the action to report.
	hosts := req.Hosts
	if cfg, err := config.Load(s.ConfigPath); err == nil && slices.ContainsFunc(hosts, func(h string) bool { return strings.TrimSpace(h) != "" }) {
		hosts = pki.WithListenHost(hosts, cfg.MCP.MTLS.ListenAddr)
	}
	err := s.audited(ctx, actor, audit.EventInit, args, func() (map[string]any, error) {
		res, err := s.Store.Init(pki.InitOptions{Hosts: hosts, Force: req.Force})
		if err != nil {
			return nil, err
		}
		out.InitResult = res
		result := audit.ToMap(res)
		err = config.Set(s.ConfigPath, "mcp.mtls.enabled", true)
		result["mtls_enabled"] = err == nil
		if err != nil {
			return result, fmt.Errorf("%w: %w", ErrNotEnabled, err)
		}
		return result, nil
	})
	if errors.Is(err, pki.ErrInvalidHost) {
		return InitResult{}, inputErr(FieldHosts, err)
	}
	if err != nil && out.InitResult == nil {
		return InitResult{}, err
	}
	if err == nil || errors.Is(err, ErrOutcomeUnrecorded) {
		s.logFor(ctx, actor).Info("mtls initialized", "archived", out.ArchivedTo != "")
	}
	return out, err
}
