package ops

import (
	"context"
	"errors"
	"fmt"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// RenewServerRequest asks for a new server certificate under the existing
// CA.
type RenewServerRequest struct {
	// Hosts are the new SANs; empty keeps the current certificate's. The
	// host of mcp.mtls.listen_addr is always added.
	Hosts []string
}

// RenewServerResult is what RenewServer did.
type RenewServerResult struct {
	Server pki.CertInfo `json:"server"`
	// Previous is the replaced certificate, when it could be read.
	Previous *pki.CertInfo `json:"previous,omitempty"`
}

// RenewServer replaces the server certificate and key (operators only),
// audited as mtls.renew_server. Clients keep trusting the gateway: the CA
// is the same. A running gateway reloads the files; its live sessions
// continue, and new handshakes see the new certificate.
func (s *Service) RenewServer(ctx context.Context, actor identity.Agent, req RenewServerRequest) (RenewServerResult, error) {
	if err := allowed(actor, pki.RoleOperator); err != nil {
		return RenewServerResult{}, fmt.Errorf("%w: renewing the server certificate is for operators", ErrPermission)
	}
	if len(req.Hosts) > MaxHosts {
		return RenewServerResult{}, inputErrf(FieldHosts, "%w: %d entries; at most %d are accepted", pki.ErrInvalidHost, len(req.Hosts), MaxHosts)
	}
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		return RenewServerResult{}, fmt.Errorf("read the configuration: %w", err)
	}
	var out RenewServerResult
	if st := s.Store.Status(); st.Server != nil {
		out.Previous = st.Server
	}
	hosts := req.Hosts
	if len(hosts) == 0 && out.Previous != nil {
		hosts = out.Previous.SANs
	}
	hosts = pki.WithListenHost(hosts, cfg.MCP.MTLS.ListenAddr)
	args := map[string]any{"hosts": req.Hosts}
	err = s.audited(ctx, actor, audit.EventRenewServer, args, func() (map[string]any, error) {
		info, err := s.Store.RenewServer(hosts)
		if err != nil {
			return nil, err
		}
		out.Server = info
		return audit.ToMap(info), nil
	})
	if errors.Is(err, pki.ErrInvalidHost) {
		return RenewServerResult{}, inputErr(FieldHosts, err)
	}
	if err != nil && !errors.Is(err, ErrOutcomeUnrecorded) {
		return RenewServerResult{}, err
	}
	s.logFor(ctx, actor).Info("server certificate renewed", logKeySerial, out.Server.Serial, "sans", out.Server.SANs)
	return out, err
}
