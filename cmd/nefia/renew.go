package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/renewal"
)

// pendingSuffix names the staged certificate of a renewal whose key is
// already in place.
const pendingSuffix = renewal.PendingSuffix

func newRenewCmd(e *env, g *globals) *cobra.Command {
	var f connectFlags
	var revokePrevious, asJSON bool
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew this agent's own client certificate at a running gateway",
		Long: `Renew the client certificate NAME.crt in --cert-dir at a running gateway, over
mutual TLS with that very certificate: a new P-256 key is generated here (it
never leaves this host), the gateway signs it with the same name and role,
a new serial and the original lifetime, and NAME.key (0600) and NAME.crt are
replaced. The old certificate stays valid until it expires unless
--revoke-previous. A revoked or expired certificate cannot renew: ask an
operator for a new one.

Files: the new certificate is staged as NAME.crt.renew, then NAME.key is
replaced atomically, then NAME.crt.renew is renamed over NAME.crt. A crash
between those two steps leaves the new key with NAME.crt.renew beside the
old NAME.crt; the next 'nefia mtls renew' finishes the rename before
anything else (or do it by hand: mv NAME.crt.renew NAME.crt).

Exit status: 0 renewed, 1 the gateway could not be reached or refused,
2 bad flags or unreadable certificate files.`,
		Example: `  nefia mtls renew --name claude-agent --cert-dir ~/nefia-client-certs --addr gateway.lan:19821
  nefia mtls renew --name claude-agent --revoke-previous`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := f.files()
			if err != nil {
				return err
			}
			if err := finishPendingRenewal(files); err != nil {
				return err
			}
			cfg, err := files.load()
			if err != nil {
				return err
			}
			addr, err := f.gatewayAddr(g, e)
			if err != nil {
				return err
			}
			cfg.ServerName = f.serverName
			res, err := renewal.Renew(cmd.Context(), renewal.Request{Addr: addr, TLS: cfg, Name: f.name,
				Files: renewal.Files{Cert: files.cert, Key: files.key}, RevokePrevious: revokePrevious})
			switch {
			case errors.Is(err, renewal.ErrWrite):
				return errors.New(strings.ReplaceAll(err.Error(), "renewal: ", ""))
			case errors.Is(err, renewal.ErrGateway):
				return connectError{errors.New(termSafe(strings.ReplaceAll(err.Error(), "renewal: the gateway did not renew the certificate: ", "")))}
			case err != nil:
				return err
			}
			out := res.Output
			if asJSON {
				return writeJSON(e.stdout, out)
			}
			fmt.Fprintf(e.stdout, "Renewed %s certificate %q: serial %s (renews %s), valid until %s\n",
				termSafe(string(out.Role)), termSafe(out.Name), termSafe(out.Serial), termSafe(out.Renews), out.NotAfter.Format(time.RFC3339))
			fmt.Fprintf(e.stdout, "cert: %s\nkey:  %s\n", termSafe(files.cert), termSafe(files.key))
			if out.PreviousRevoked {
				fmt.Fprintf(e.stdout, "previous certificate %s revoked\n", termSafe(out.Renews))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "client certificate name: renew NAME.crt/NAME.key in --cert-dir")
	fl.StringVar(&f.certDir, "cert-dir", "./nefia-client-certs", "directory holding NAME.crt, NAME.key and ca.crt")
	fl.StringVar(&f.addr, "addr", "", "gateway host:port (default: mcp.mtls.listen_addr from nefia.yaml, else 127.0.0.1:19821)")
	fl.StringVar(&f.ca, "ca", "", "CA certificate the gateway must chain to (default: ca.crt in --cert-dir)")
	fl.StringVar(&f.serverName, "server-name", "", "name to verify in the gateway's certificate (default: the host of --addr)")
	fl.BoolVar(&revokePrevious, "revoke-previous", false, "revoke the current certificate once the new one is issued")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// finishPendingRenewal completes a renewal interrupted after its key was
// written (see renewal.Files.FinishPending); an unreadable staged
// certificate is the caller's to fix (exit 2).
func finishPendingRenewal(files certFiles) error {
	err := renewal.Files{Cert: files.cert, Key: files.key}.FinishPending()
	if errors.Is(err, renewal.ErrStaged) {
		return usage(fmt.Errorf("%s: %w", files.certFlag, errors.Unwrap(err)))
	}
	return err
}

// warnPrevious says on stderr (where it cannot break --json) that a name's
// earlier certificates are still active after it was issued again: each
// still admits whoever holds its key (issue 13 item 5).
func warnPrevious(w io.Writer, name string, serials []string) {
	if len(serials) == 0 {
		return
	}
	fmt.Fprintf(w, "nefia: warning: %d earlier certificate(s) named %q stay active until they expire: %s; "+
		"pass --revoke-previous, or revoke them with 'nefia mtls revoke --serial SERIAL'\n",
		len(serials), termSafe(name), termSafe(strings.Join(serials, ", ")))
}
