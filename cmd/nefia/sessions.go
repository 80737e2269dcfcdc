package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
)

// addSessionCmds adds 'nefia mtls sessions' and 'nefia mtls disconnect',
// which talk to a running gateway through its control socket.
func addSessionCmds(root *cobra.Command, e *env, g *globals) {
	if mtls, _, err := root.Find([]string{"mtls"}); err == nil && mtls != root {
		mtls.AddCommand(newSessionsCmd(e, g), newDisconnectCmd(e, g))
	}
}

// exitError carries its own exit status.
type exitError struct {
	err  error
	code int
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }
func (e exitError) ExitCode() int { return e.code }

// control sends one request to the gateway serving this state directory.
func control(s *session, req server.ControlRequest) (server.ControlResponse, error) {
	path := filepath.Join(s.stateDir, server.ControlSocketFile)
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return server.ControlResponse{}, exitError{fmt.Errorf("no gateway is running for state dir %s (no control socket answers at %s)", s.stateDir, path), 1}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return server.ControlResponse{}, fmt.Errorf("control socket: %w", err)
	}
	var resp server.ControlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return server.ControlResponse{}, fmt.Errorf("control socket: %w", err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("gateway: %s", resp.Error)
	}
	return resp, nil
}

func printConns(e *env, conns []server.ConnInfo) {
	fmt.Fprintf(e.stdout, "%-16s %-20s %-9s %-12s %-22s %-20s %-20s %5s  %s\n", "ID", "NAME", "ROLE", "TRANSPORT", "REMOTE", "SINCE", "LAST ACTIVITY", "CALLS", "SERIAL")
	for _, c := range conns {
		fmt.Fprintf(e.stdout, "%-16s %-20s %-9s %-12s %-22s %-20s %-20s %5d  %s\n", termSafe(c.ID), termSafe(c.Name), termSafe(c.Role), termSafe(c.Transport),
			termSafe(c.RemoteAddr), c.Since.UTC().Format(time.RFC3339), c.LastActivity.UTC().Format(time.RFC3339), c.Calls, termSafe(c.Serial))
	}
}

func newSessionsCmd(e *env, g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List the live connections of the running gateway",
		Long: `List the live connections of the gateway serving this state directory:
name, serial, role, transport, remote address, connection id, since, last
activity (last tool call) and calls so far. The gateway is reached through
its control socket in the state directory, never a network port.`,
		Example: "  nefia mtls sessions\n  nefia mtls sessions --json | jq -r '.[].id'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			resp, err := control(s, server.ControlRequest{Op: server.ControlSessions})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, resp.Connections)
			}
			if len(resp.Connections) == 0 {
				fmt.Fprintln(e.stdout, "no live connections")
				return nil
			}
			printConns(e, resp.Connections)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the connections as JSON")
	return cmd
}

func newDisconnectCmd(e *env, g *globals) *cobra.Command {
	var id, serial string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "disconnect",
		Short: "End live connections of the running gateway without revoking",
		Long: `End a live connection (--session, the id 'nefia mtls sessions' shows) or
every live connection of a certificate (--serial), without revoking it: the
client may connect again. Each close is audited (connection_close, reason
"disconnected by an operator").`,
		Example: "  nefia mtls disconnect --session c-abcdef123456\n  nefia mtls disconnect --serial 3f9a0c...",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("session") == cmd.Flags().Changed("serial") {
				return usage(errors.New("give exactly one of --session or --serial"))
			}
			if cmd.Flags().Changed("serial") {
				canon, err := pki.ParseSerial(serial)
				if err != nil {
					return usage(fmt.Errorf("--serial %q: %w", serial, err))
				}
				serial = canon
			} else if id == "" {
				return usage(errors.New("--session: empty"))
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			resp, err := control(s, server.ControlRequest{Op: server.ControlDisconnect, ID: id, Serial: serial})
			if err != nil {
				return err
			}
			if resp.NotFound {
				return exitError{errors.New("no live connection matches; see 'nefia mtls sessions'"), 1}
			}
			if asJSON {
				return writeJSON(e.stdout, resp.Connections)
			}
			for _, c := range resp.Connections {
				fmt.Fprintf(e.stdout, "Disconnected %s (%s, serial %s, from %s)\n", termSafe(c.ID), termSafe(c.Name), termSafe(c.Serial), termSafe(c.RemoteAddr))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "session", "", "the connection id to end (from 'nefia mtls sessions')")
	f.StringVar(&serial, "serial", "", "end every live connection of this certificate serial")
	f.BoolVar(&asJSON, "json", false, "print the connections closed as JSON")
	return cmd
}
