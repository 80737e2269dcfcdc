package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
)

// ControlSocketFile is the name of the gateway's control socket in the
// state directory: how 'nefia mtls sessions' and 'nefia mtls disconnect'
// reach a running gateway. It is a Unix socket, mode 0600 in the 0700 state
// directory, so only the gateway's owner (who holds the CA key anyway) can
// use it; it is never a network port.
const ControlSocketFile = "control.sock"

// Control operations.
const (
	ControlSessions   = "sessions"
	ControlDisconnect = "disconnect"
)

// ControlRequest is one request on the control socket: one JSON object per
// connection, answered by one ControlResponse.
type ControlRequest struct {
	Op string `json:"op"`
	// ID or Serial pick the connections to disconnect.
	ID     string `json:"id,omitempty"`
	Serial string `json:"serial,omitempty"`
}

// ControlResponse answers a ControlRequest: the live connections
// (sessions) or those closed (disconnect); Error when it failed, NotFound
// when nothing matched a disconnect.
type ControlResponse struct {
	Connections []ConnInfo `json:"connections"`
	Error       string     `json:"error,omitempty"`
	NotFound    bool       `json:"not_found,omitempty"`
}

const controlTimeout = 5 * time.Second

// listenControl makes the control socket at path. A socket file left by a
// gateway that died is replaced; one a running gateway answers on is not
// (that gateway keeps it).
func listenControl(ctx context.Context, path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("server: control socket %s: another gateway answers on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("server: control socket: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("server: control socket: %w", err)
	}
	// The state directory is 0700 already; this keeps the socket the
	// owner's alone wherever it is.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("server: control socket: %w", err)
	}
	return ln, nil
}

// serveControl answers on ln until ctx ends, then closes it and removes
// its file.
func (g *Gateway) serveControl(ctx context.Context, ln net.Listener, path string) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer os.Remove(path)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("control socket closed", "error", err)
			}
			ln.Close()
			return
		}
		g.answerControl(c) // one at a time: requests are rare and quick
	}
}

// answerControl reads one request and writes its answer.
func (g *Gateway) answerControl(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(controlTimeout))
	var req ControlRequest
	resp := ControlResponse{Connections: []ConnInfo{}}
	if err := json.NewDecoder(io.LimitReader(c, 4<<10)).Decode(&req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		switch req.Op {
		case ControlSessions:
			resp.Connections = append(resp.Connections, g.Connections()...)
		case ControlDisconnect:
			closed, err := g.Disconnect(req.ID, req.Serial)
			g.auditDisconnect(req, closed, err)
			switch {
			case errors.Is(err, ErrNoSuchConnection):
				resp.NotFound = true
			case err != nil:
				resp.Error = err.Error()
			}
			resp.Connections = append(resp.Connections, closed...)
		default:
			resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		}
	}
	_ = json.NewEncoder(c).Encode(resp)
}

// auditDisconnect records who ended which connections: the local operator
// (only the gateway's owner can reach the control socket), durably, after
// the fact (the close of each is recorded too, as connection_close).
func (g *Gateway) auditDisconnect(req ControlRequest, closed []ConnInfo, err error) {
	g.auditDisconnectBy(identity.LocalOperator(controlTransport), req, closed, err)
}

// auditDisconnectBy records a disconnect made by actor (the local operator
// at the control socket, or an operator's nefia.gateway.disconnect call).
func (g *Gateway) auditDisconnectBy(actor identity.Agent, req ControlRequest, closed []ConnInfo, err error) {
	if g.audit == nil {
		return
	}
	r := audit.Record{Event: audit.EventDisconnect, Outcome: audit.OutcomeOK, Args: map[string]any{}}
	actor.Stamp(&r)
	if req.ID != "" {
		r.Args["id"] = req.ID
	}
	if req.Serial != "" {
		r.Args["serial"] = req.Serial
	}
	ids := make([]any, 0, len(closed))
	for _, c := range closed {
		ids = append(ids, c.ID+" "+c.Name+" "+c.Serial)
	}
	r.Result = map[string]any{"closed": ids}
	if err != nil {
		r.Outcome, r.Error = audit.OutcomeError, err.Error()
	}
	if aerr := g.audit.trail.Append(r, true); aerr != nil {
		g.log.Error("disconnect not audited", "error", aerr)
	}
}

// controlTransport is how a control socket request is recorded.
const controlTransport = "control-socket"
