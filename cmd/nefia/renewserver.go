package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/ops"
)

func newRenewServerCmd(e *env, g *globals) *cobra.Command {
	var hosts string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "renew-server",
		Short: "Replace the server certificate under the existing CA (clients keep working)",
		Long: `Replace the gateway's server certificate and key with new ones signed by the
existing CA: with the same names by default, or --hosts. The host of
mcp.mtls.listen_addr is always included. Unlike 'init --force' no client
certificate is affected. A running gateway picks the new files up for new
connections; its live sessions continue.`,
		Example: `  nefia mtls renew-server
  nefia mtls renew-server --hosts gateway.lan,10.99.0.1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			req := ops.RenewServerRequest{}
			if cmd.Flags().Changed("hosts") {
				if req.Hosts = splitList(hosts); len(req.Hosts) == 0 {
					return usage(fmt.Errorf("--hosts: no DNS name or IP address given"))
				}
			}
			res, err := s.service().RenewServer(cmd.Context(), cliOperator(), req)
			if err != nil {
				return cliError(err)
			}
			if asJSON {
				return writeJSON(e.stdout, res)
			}
			fmt.Fprintf(e.stdout, "Renewed server certificate for %s (serial %s, expires %s)\n",
				termSafe(strings.Join(res.Server.SANs, ", ")), termSafe(res.Server.Serial), res.Server.NotAfter.Format(time.RFC3339))
			if res.Previous != nil {
				fmt.Fprintf(e.stdout, "Replaced serial %s; a running gateway uses the new one for new connections.\n", termSafe(res.Previous.Serial))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hosts, "hosts", "", "comma-separated DNS names and IP addresses; replaces the current certificate's list (default: keep it); the listen address's host is always added")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
