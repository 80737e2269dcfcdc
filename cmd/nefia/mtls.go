package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

func newMTLSCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mtls",
		Short: "Manage the CA, the server certificate and client certificates",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newInitCmd(e, g), newIssueClientCmd(e, g), newStatusCmd(e, g), newRevokeCmd(e, g), newListCmd(e, g), newCRLCmd(e, g))
	cmd.AddCommand(newRenewCmd(e, g), newRenewServerCmd(e, g)) // issue 13: certificate renewal
	cmd.AddCommand(newStoreCmd(e, g))                          // issue 15: the etcd backend
	return cmd
}

func newInitCmd(e *env, g *globals) *cobra.Command {
	var hosts string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the root CA and the server certificate, and enable mTLS",
		Example: `  nefia mtls init
  nefia mtls init --hosts localhost,10.99.0.1
  nefia mtls init --force   # replace the CA: every issued certificate stops working`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			res, err := s.service().Init(cmd.Context(), cliOperator(), ops.InitRequest{Hosts: splitList(hosts), Force: force})
			if err != nil {
				return cliError(err)
			}
			s.log.Debug("mtls initialized", "state_dir", s.stateDir, "config", s.configPath)
			out := struct {
				*pki.InitResult
				StateDir   string `json:"state_dir"`
				ConfigFile string `json:"config_file"`
			}{res.InitResult, s.stateDir, s.configPath}
			if asJSON {
				return writeJSON(e.stdout, out)
			}
			w := e.stdout
			fmt.Fprintf(w, "Created CA %q (expires %s)\n", res.CA.Subject, day(res.CA.NotAfter))
			fmt.Fprintf(w, "Created server certificate for %s (expires %s)\n", termSafe(strings.Join(res.Server.SANs, ", ")), day(res.Server.NotAfter))
			if res.ArchivedTo != "" {
				fmt.Fprintf(w, "Previous CA archived in %s\n", termSafe(res.ArchivedTo))
			}
			fmt.Fprintf(w, "State:  %s\nConfig: %s (mcp.mtls.enabled: true)\n", termSafe(s.stateDir), termSafe(s.configPath))
			fmt.Fprintf(w, "\nNext: nefia mtls issue-client --name NAME --role operator\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hosts, "hosts", "localhost,127.0.0.1,::1", "comma-separated DNS names and IP addresses for the server certificate")
	f.BoolVar(&force, "force", false, "replace an existing CA (invalidates every certificate it issued)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newIssueClientCmd(e *env, g *globals) *cobra.Command {
	var name, duration, outDir, role, csrFile, p12PasswordFile string
	var force, asJSON, p12, revokePrevious bool
	cmd := &cobra.Command{
		Use:   "issue-client",
		Short: "Issue a client certificate for an agent or operator",
		Example: `  nefia mtls issue-client --name claude-agent
  nefia mtls issue-client --name ops --role operator --duration 720h
  nefia mtls issue-client --name ci-bot --csr ci-bot.csr --out-dir ./certs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			req := ops.IssueRequest{Name: name, Role: role, Duration: duration, OutDir: outDir, Force: force, P12: p12, RevokePrevious: revokePrevious}
			if cmd.Flags().Changed("csr") {
				if csrFile == "" {
					return usage(errors.New("--csr: the file name is empty"))
				}
				if req.CSRPEM, err = readLimited(csrFile, pki.MaxCSRBytes); err != nil {
					return usage(fmt.Errorf("--csr: %w", err))
				}
				if req.CSRPEM == nil {
					req.CSRPEM = []byte{} // given but empty: refused, never "no CSR"
				}
			}
			if !p12 && cmd.Flags().Changed("p12-password-file") {
				return usage(errors.New("--p12-password-file is only used with --p12; add --p12 or drop it"))
			}
			if p12 && csrFile == "" {
				if req.P12Password, err = readP12Password(p12PasswordFile); err != nil {
					return usage(err)
				}
			}
			iss, err := s.service().Issue(cmd.Context(), cliOperator(), req)
			if err != nil {
				return cliError(err)
			}
			warnPrevious(e.stderr, name, iss.PreviousActive)
			paths := iss.Files
			out := struct {
				pki.IssuedCert
				Files           pki.BundlePaths `json:"files"`
				PreviousActive  []string        `json:"previous_active,omitempty"`
				PreviousRevoked []string        `json:"previous_revoked,omitempty"`
			}{iss.IssuedCert, paths, iss.PreviousActive, iss.PreviousRevoked}
			if asJSON {
				return writeJSON(e.stdout, out)
			}
			w := e.stdout
			fmt.Fprintf(w, "Issued %s certificate %q, valid until %s\n", iss.Role, iss.Name, iss.NotAfter.Format(time.RFC3339))
			fmt.Fprintf(w, "serial: %s\n", termSafe(iss.Serial))
			fmt.Fprintf(w, "cert:   %s\n", termSafe(paths.Cert))
			if paths.Key != "" {
				fmt.Fprintf(w, "key:    %s\n", termSafe(paths.Key))
			}
			fmt.Fprintf(w, "ca:     %s\n", termSafe(paths.CA))
			if paths.P12 != "" {
				fmt.Fprintf(w, "p12:    %s\n", termSafe(paths.P12))
			}
			for _, serial := range iss.PreviousRevoked {
				fmt.Fprintf(w, "revoked previous certificate %s\n", termSafe(serial))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "certificate name (CN, and file name): [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
	f.StringVar(&duration, "duration", "24h", "validity, e.g. 24h, 90m or 30d")
	f.StringVar(&outDir, "out-dir", "./nefia-client-certs", "directory for NAME.crt, NAME.key and ca.crt")
	f.StringVar(&role, "role", "agent", "role: agent (read-only tools) or operator (every tool)")
	f.StringVar(&csrFile, "csr", "", "sign this PEM CSR instead of generating a key (no NAME.key is written)")
	f.BoolVar(&force, "force", false, "overwrite an existing NAME.crt / NAME.key")
	f.BoolVar(&p12, "p12", false, "also write NAME.p12 (key, certificate and CA; PKCS#12, AES-256) for clients that want one file")
	f.StringVar(&p12PasswordFile, "p12-password-file", "", "file holding the NAME.p12 password (with --p12; a password is never a flag value)")
	f.BoolVar(&revokePrevious, "revoke-previous", false, "revoke the name's earlier active certificates once the new one is written")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newStatusCmd(e *env, g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the CA, the server certificate, client counts and problems",
		Example: "  nefia mtls status\n  nefia mtls status --json | jq .problems",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			cfg, cfgErr := config.Load(s.configPath)
			if cfgErr != nil {
				cfg = config.Loaded{Config: config.Default(), Path: s.configPath}
			}
			r := tools.BuildStatus(s.store, cfg, cfgErr)
			if asJSON {
				return writeJSON(e.stdout, r)
			}
			printStatus(e.stdout, r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printStatus(w io.Writer, r tools.StatusReport) {
	fmt.Fprintf(w, "mTLS enabled: %v\nlisten addr:  %s\nstate dir:    %s\nconfig file:  %s\n", r.Enabled, termSafe(r.ListenAddr), termSafe(r.StateDir), termSafe(r.ConfigFile))
	for _, c := range []struct {
		label string
		info  *pki.CertInfo
	}{{"CA", r.CA}, {"server", r.Server}} {
		if c.info == nil {
			fmt.Fprintf(w, "%s: none\n", c.label)
			continue
		}
		fmt.Fprintf(w, "%s: %s\n  serial:      %s\n  valid:       %s .. %s\n  fingerprint: sha256:%s\n",
			c.label, termSafe(c.info.Subject), termSafe(c.info.Serial), c.info.NotBefore.Format(time.RFC3339), c.info.NotAfter.Format(time.RFC3339), c.info.Fingerprint)
		if len(c.info.SANs) > 0 {
			fmt.Fprintf(w, "  SANs:        %s\n", termSafe(strings.Join(c.info.SANs, ", ")))
		}
	}
	if r.Clients == nil {
		fmt.Fprintf(w, "clients: unknown (%s)\n", termSafe(r.ClientsError))
	} else {
		fmt.Fprintf(w, "clients: %d issued, %d active, %d expired, %d revoked\n", r.Clients.Issued, r.Clients.Active, r.Clients.Expired, r.Clients.Revoked)
	}
	if r.Connections != nil {
		fmt.Fprintf(w, "connections: %d\n", *r.Connections)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "problems: none")
		return
	}
	fmt.Fprintln(w, "problems:")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", termSafe(p))
	}
}

func newRevokeCmd(e *env, g *globals) *cobra.Command {
	var serial, name, certFile, reason string
	var asJSON, yes bool
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke client certificates by serial, name or certificate file",
		Long: `Revoke client certificates. New handshakes with them fail at once, and a
running gateway closes their live sessions. Revoking twice is harmless.

Give exactly one of:
  --serial S   that serial. Any well-formed serial is revoked, even one the
               inventory does not know (a warning on stderr says so).
  --name NAME  every active (or not yet valid) certificate of that name, listed
               on stderr first; asks before revoking unless --yes, and needs
               --yes when stdin is not a terminal.
  --cert FILE  the certificate in a PEM file (warns if this CA did not issue it).`,
		Example: `  nefia mtls revoke --serial 3f9a0c... --reason "laptop lost"
  nefia mtls revoke --name claude-agent --yes
  nefia mtls revoke --cert nefia-client-certs/desktop.crt
  nefia mtls list   # to find serials`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var given []string
			for _, f := range []string{"serial", "name", "cert"} {
				if cmd.Flags().Changed(f) {
					given = append(given, "--"+f)
				}
			}
			if len(given) != 1 {
				return usage(fmt.Errorf("give exactly one of --serial, --name or --cert (got %s)", orNone(given)))
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			serials := []string{serial}
			var warnings []string
			switch {
			case cmd.Flags().Changed("cert"):
				sn, w, err := certFileSerial(s.store, certFile)
				if err != nil {
					return err
				}
				serials, warnings = []string{sn}, w
			case cmd.Flags().Changed("name"):
				list, err := s.store.ListNamed(name)
				if err != nil {
					return err
				}
				targets := activeNamed(list, name)
				if len(targets) == 0 {
					return usage(fmt.Errorf("--name %q: no active certificate has that name (see 'nefia mtls list --name')", name))
				}
				fmt.Fprintf(e.stderr, "%d certificate(s) named %s:\n", len(targets), termSafe(name))
				serials = serials[:0]
				for _, c := range targets {
					fmt.Fprintf(e.stderr, "  %s  %-9s %-13s expires %s\n", termSafe(c.Serial), termSafe(string(c.Role)), c.State, c.NotAfter.Format(time.RFC3339))
					serials = append(serials, c.Serial)
				}
				if !yes {
					ok, err := confirm(e, fmt.Sprintf("Revoke these %d?", len(targets)))
					if err != nil {
						return err
					}
					if !ok {
						fmt.Fprintln(e.stderr, "nothing revoked")
						return nil
					}
				}
			}
			// Warnings go to stderr, where they cannot break --json output.
			for _, w := range warnings {
				fmt.Fprintf(e.stderr, "nefia: warning: %s\n", termSafe(w))
			}
			type result struct {
				pki.Revocation
				AlreadyRevoked bool     `json:"already_revoked"`
				Warnings       []string `json:"warnings,omitempty"`
			}
			var results []result
			for _, sn := range serials {
				res, err := s.service().Revoke(cmd.Context(), cliOperator(), ops.RevokeRequest{Serial: sn, Reason: reason})
				if err != nil {
					if len(results) > 0 {
						fmt.Fprintf(e.stderr, "nefia: %d of %d revoked before this error\n", len(results), len(serials))
					}
					return cliError(err)
				}
				for _, w := range res.Warnings {
					fmt.Fprintf(e.stderr, "nefia: warning: %s\n", w)
				}
				r := result{res.Revocation, res.AlreadyRevoked, append(append([]string(nil), warnings...), res.Warnings...)}
				results = append(results, r)
				if asJSON {
					continue
				}
				rev, name := r.Revocation, r.Name
				if name == "" {
					name = "name unknown"
				}
				if r.AlreadyRevoked {
					fmt.Fprintf(e.stdout, "Already revoked: %s (%s) since %s\n", termSafe(rev.Serial), termSafe(name), rev.RevokedAt.Format(time.RFC3339))
					continue
				}
				fmt.Fprintf(e.stdout, "Revoked %s (%s) at %s\n", termSafe(rev.Serial), termSafe(name), rev.RevokedAt.Format(time.RFC3339))
			}
			if !asJSON {
				return nil
			}
			if cmd.Flags().Changed("name") { // one or more: always a list
				return writeJSON(e.stdout, results)
			}
			return writeJSON(e.stdout, results[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&serial, "serial", "", "serial to revoke (hex, any case, colons allowed)")
	f.StringVar(&name, "name", "", "revoke every active certificate of this name")
	f.StringVar(&certFile, "cert", "", "revoke the certificate in this PEM file")
	f.StringVar(&reason, "reason", "", "why (recorded in the revocation store)")
	f.BoolVar(&yes, "yes", false, "with --name: revoke without asking")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON (a list with --name)")
	return cmd
}

// orNone joins flag names for an error message.
func orNone(given []string) string {
	if len(given) == 0 {
		return "none"
	}
	return strings.Join(given, " and ")
}

func newListCmd(e *env, g *globals) *cobra.Command {
	var asJSON bool
	var state, expiring, name string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List issued client certificates and their state",
		Example: `  nefia mtls list
  nefia mtls list --state active --expiring 72h
  nefia mtls list --name 'claude-*' --state revoked,expired
  nefia mtls list --json | jq -r '.[] | select(.state=="active") | .serial'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := newListFilter(state, expiring, name, e.clock.Now())
			if err != nil {
				return err
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			all, err := s.store.List()
			if err != nil {
				return err
			}
			list := make([]pki.ListedCert, 0, len(all))
			for _, c := range all {
				if filter.keep(c) {
					list = append(list, c)
				}
			}
			if asJSON {
				return writeJSON(e.stdout, list)
			}
			if len(list) == 0 {
				if len(all) > 0 {
					fmt.Fprintln(e.stdout, "no client certificate matches")
					return nil
				}
				fmt.Fprintln(e.stdout, "no client certificates issued yet")
				return nil
			}
			fmt.Fprintf(e.stdout, "%-24s %-9s %-13s %-20s %s\n", "NAME", "ROLE", "STATE", "EXPIRES", "SERIAL")
			for _, c := range list {
				fmt.Fprintf(e.stdout, "%-24s %-9s %-13s %-20s %s\n", termSafe(c.Name), termSafe(string(c.Role)), termSafe(string(c.State)), c.NotAfter.Format(time.RFC3339), termSafe(c.Serial))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the list as JSON")
	f.StringVar(&state, "state", "", "only these states: active, expired, revoked, not_yet_valid (comma-separated)")
	f.StringVar(&expiring, "expiring", "", "only active certificates expiring within this, e.g. 72h or 30d")
	f.StringVar(&name, "name", "", "only names matching this glob, e.g. 'claude-*'")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readP12Password reads the PKCS#12 password from its file: a secret never
// comes as a flag value, where ps and shell history would show it. Its
// length is the operation's to check.
func readP12Password(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("--p12 needs --p12-password-file FILE (the password is never taken as a flag value)")
	}
	data, err := readLimited(path, 1024)
	if err != nil {
		return "", fmt.Errorf("--p12-password-file: %w", err)
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}

// readLimited reads a small input file, refusing anything larger than limit.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func day(t time.Time) string { return t.Format("2006-01-02") }
