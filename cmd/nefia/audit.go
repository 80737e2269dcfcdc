package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
)

// auditDir is where the trail lives inside the state directory.
func (s *session) auditDir() string { return filepath.Join(s.stateDir, "audit") }

// openAudit opens the trail with the configured rotation size (the default
// when the config cannot be read: a broken config must not stop auditing).
func (s *session) openAudit() (*audit.Logger, error) {
	size := config.Default().Audit.MaxSizeMB
	if loaded, err := config.Load(s.configPath); err == nil {
		size = loaded.Audit.MaxSizeMB
	}
	return audit.Open(s.auditDir(), audit.Options{MaxSize: int64(size) << 20, Logger: s.log})
}

func newAuditCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and read the audit trail",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newAuditVerifyCmd(e, g), newAuditTailCmd(e, g))
	return cmd
}

// errChainBroken makes `audit verify` exit 1, as scripts expect of a check
// that ran and failed (2 and 3 mean it could not run).
type errChainBroken struct{ err error }

func (e errChainBroken) Error() string { return e.err.Error() }
func (e errChainBroken) Unwrap() error { return e.err }

func newAuditVerifyCmd(e *env, g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain",
		Long: `Check the audit trail's hash chain: every record's HMAC and its link to the
record before it. Exit 0 with a count when it holds; exit 1 naming the first
bad line and why (edited, deleted, reordered, inserted, forged or another key).
Without --file the whole trail is checked, rotated files included.`,
		Example: "  nefia audit verify\n  nefia audit verify --file ~/.local/state/nefia/audit/audit-20261126T120000.000000000Z.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			key, err := audit.LoadKey(filepath.Join(s.auditDir(), audit.KeyFile))
			if err != nil {
				return usage(fmt.Errorf("no audit trail in %s: %w", s.auditDir(), err))
			}
			var n int
			if file != "" {
				n, err = audit.VerifyFile(file, key)
			} else {
				n, err = audit.VerifyDir(s.auditDir(), key)
			}
			if errors.Is(err, audit.ErrBroken) {
				return errChainBroken{err}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "ok: %d records, chain intact\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify this file alone (its first link is taken on trust)")
	return cmd
}

func newAuditTailCmd(e *env, g *globals) *cobra.Command {
	var n int
	var follow, asJSON bool
	cmd := &cobra.Command{
		Use:     "tail",
		Short:   "Show recent audit records",
		Example: "  nefia audit tail -n 50\n  nefia audit tail --follow --json | jq 'select(.outcome==\"denied\")'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 0 {
				return usage(fmt.Errorf("-n %d: want a count of 0 or more", n))
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			recs, err := audit.Tail(s.auditDir(), n)
			if err != nil {
				return err
			}
			show := func(r audit.Record) {
				if asJSON {
					_ = json.NewEncoder(e.stdout).Encode(r)
					return
				}
				printRecord(e.stdout, r)
			}
			for _, r := range recs {
				show(r)
			}
			if !follow {
				return nil
			}
			return audit.Follow(cmd.Context(), s.auditDir(), 250*time.Millisecond, show)
		},
	}
	f := cmd.Flags()
	f.IntVarP(&n, "lines", "n", 20, "how many records")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new records until interrupted")
	f.BoolVar(&asJSON, "json", false, "one JSON record per line")
	return cmd
}

// printRecord is the human view: time, event, who, what, outcome.
func printRecord(w io.Writer, r audit.Record) {
	who := "-"
	if r.Agent != nil {
		who = r.Agent.Name
		if r.Agent.Role != "" {
			who += "(" + r.Agent.Role + ")"
		}
		if r.Agent.Serial != "" {
			who += " " + r.Agent.Serial
		}
	}
	what := r.Tool
	if r.Reason != "" {
		what = strings.TrimSpace(what + " " + r.Reason)
	}
	line := fmt.Sprintf("%s  %-19s %-8s %s", r.Time.Format("2006-01-02T15:04:05.000Z07:00"), r.Event, r.Outcome, who)
	if what != "" {
		line += "  " + what
	}
	if r.RemoteAddr != "" {
		line += "  from " + r.RemoteAddr
	}
	if r.Error != "" {
		line += "  error: " + r.Error
	}
	fmt.Fprintln(w, line)
}
