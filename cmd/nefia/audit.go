package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
)

// auditDir is where the trail lives inside the state directory.
func (s *session) auditDir() string { return filepath.Join(s.stateDir, "audit") }

// openAudit opens the trail with the configured rotation size and file
// count (the defaults when the config cannot be read: a broken config must
// not stop auditing).
func (s *session) openAudit() (*audit.Logger, error) {
	all := config.Default()
	if loaded, err := config.Load(s.configPath); err == nil {
		all = loaded.Config
	}
	cfg := all.Audit
	return audit.Open(s.auditDir(), audit.Options{MaxSize: int64(cfg.MaxSizeMB) << 20, MaxFiles: cfg.MaxFiles, GatewayID: all.MCP.GatewayIDOrHost(), Logger: s.log})
}

func newAuditCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and read the audit trail",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newAuditVerifyCmd(e, g), newAuditTailCmd(e, g), newAuditQueryCmd(e, g), newAuditCheckpointCmd(e, g))
	return cmd
}

// errChainBroken makes `audit verify` exit 1, as scripts expect of a check
// that ran and failed (2 and 3 mean it could not run).
type errChainBroken struct{ err error }

func (e errChainBroken) Error() string { return e.err.Error() }
func (e errChainBroken) Unwrap() error { return e.err }

func newAuditVerifyCmd(e *env, g *globals) *cobra.Command {
	var file, checkpoint string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain",
		Long: `Check the audit trail's hash chain: every record's HMAC and its link to the
record before it. Exit 0 with a count when it holds; exit 1 naming the first
bad line and why (edited, deleted, reordered, inserted, forged or another key).
Without --file the whole trail is checked, rotated files included, and its
end against the signed checkpoint the writers keep (audit/checkpoint.json):
a trail that ends before it lost its newest records. --checkpoint also checks
it against a checkpoint kept elsewhere (printed earlier by
'nefia audit checkpoint'), proving nothing older than that was removed.`,
		Example: "  nefia audit verify\n  nefia audit verify --checkpoint ~/audit-checkpoint-2026-11-01.json\n  nefia audit verify --file ~/.local/state/nefia/audit/audit-20261126T120000.000000000Z.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file != "" && checkpoint != "" {
				return usage(errors.New("--checkpoint: checks the whole trail; it cannot be combined with --file"))
			}
			var extra *audit.Checkpoint
			if checkpoint != "" {
				data, err := os.ReadFile(checkpoint)
				if err != nil {
					return usage(fmt.Errorf("--checkpoint: %w", err))
				}
				if extra, err = audit.ParseCheckpoint(data); err != nil {
					return usage(fmt.Errorf("--checkpoint %s: %w", checkpoint, err))
				}
			}
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
				n, err = audit.VerifyWithCheckpoint(s.auditDir(), key, extra)
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
	cmd.Flags().StringVar(&checkpoint, "checkpoint", "", "also check the trail against this checkpoint, printed earlier by 'nefia audit checkpoint'")
	return cmd
}

func newAuditCheckpointCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the trail's signed checkpoint, to keep elsewhere",
		Long: `Print the signed checkpoint of the audit trail (record count and last hash)
as JSON. Keep it off this machine: 'nefia audit verify --checkpoint FILE'
later proves that no record up to it was removed or rewritten.`,
		Example: "  nefia audit checkpoint > audit-checkpoint-$(date +%F).json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			ck, err := audit.ReadCheckpoint(s.auditDir())
			if errors.Is(err, audit.ErrBroken) {
				return errChainBroken{err}
			}
			if err != nil {
				return err
			}
			if ck == nil {
				return usage(fmt.Errorf("no audit checkpoint in %s yet (nothing has been audited)", s.auditDir()))
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ck)
		},
	}
}

func newAuditTailCmd(e *env, g *globals) *cobra.Command {
	var n int
	var follow, asJSON bool
	var ff recordFilterFlags
	cmd := &cobra.Command{
		Use:     "tail",
		Short:   "Show recent audit records",
		Example: "  nefia audit tail -n 50\n  nefia audit tail --follow --json | jq 'select(.outcome==\"denied\")'\n  nefia audit tail --follow --outcome denied,error",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 0 {
				return usage(fmt.Errorf("-n %d: want a count of 0 or more", n))
			}
			filter, err := ff.build(e.clock.Now())
			if err != nil {
				return err
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			recs, err := tailMatching(s.auditDir(), n, filter)
			if err != nil {
				return err
			}
			show := func(r audit.Record) {
				if !filter.match(r) {
					return
				}
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
	ff.register(f)
	return cmd
}

// tailMatching returns the last n records that pass filter, oldest first.
func tailMatching(dir string, n int, filter recordFilter) ([]audit.Record, error) {
	if !filter.set {
		return audit.Tail(dir, n)
	}
	var last []audit.Record
	if n == 0 {
		return nil, nil
	}
	err := audit.Scan(dir, func(r audit.Record) error {
		if filter.match(r) {
			if len(last) == n {
				last = append(last[:0:0], last[1:]...)
			}
			last = append(last, r)
		}
		return nil
	})
	return last, err
}

// printRecord is the human view: time, event, who, what, outcome. Every
// field may hold what a peer sent, so each is passed through termSafe.
func printRecord(w io.Writer, r audit.Record) {
	who := "-"
	if r.Agent != nil {
		if r.Agent.Name != "" {
			who = termSafe(r.Agent.Name)
		}
		if r.Agent.Unverified {
			who = "unverified:" + who
		}
		if r.Agent.Role != "" {
			who += "(" + termSafe(r.Agent.Role) + ")"
		}
		if r.Agent.Serial != "" {
			who += " " + termSafe(r.Agent.Serial)
		}
	}
	what := termSafe(r.Tool)
	if a := about(r); a != "" {
		what = strings.TrimSpace(what + " " + a)
	}
	if r.Reason != "" {
		what = strings.TrimSpace(what + " reason: " + termSafe(r.Reason))
	}
	line := fmt.Sprintf("%s  %-19s %-8s %s", r.Time.Format("2006-01-02T15:04:05.000Z07:00"), termSafe(r.Event), termSafe(r.Outcome), who)
	if what != "" {
		line += "  " + what
	}
	if r.RemoteAddr != "" {
		line += "  from " + termSafe(r.RemoteAddr)
	}
	if r.Error != "" {
		line += "  error: " + termSafe(r.Error)
	}
	fmt.Fprintln(w, line)
}
