package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
)

// auditOutcomes are the values of --outcome.
var auditOutcomes = []string{audit.OutcomeOK, audit.OutcomeError, audit.OutcomeDenied, audit.OutcomeStarted}

// recordFilterFlags are the flags 'nefia audit query' and 'nefia audit tail'
// share, as typed.
type recordFilterFlags struct {
	agent, serial, event, tool, outcome, since, until string
}

func (f *recordFilterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.agent, "agent", "", "only records of this agent name (a glob: 'claude-*')")
	fs.StringVar(&f.serial, "serial", "", "only records by or about this certificate serial (any case, colons allowed)")
	fs.StringVar(&f.event, "event", "", "only these events, comma-separated globs: tool_call, 'mtls.*', connection_rejected, ...")
	fs.StringVar(&f.tool, "tool", "", "only calls of these tools, comma-separated globs: 'nefia.mtls.*'")
	fs.StringVar(&f.outcome, "outcome", "", "only these outcomes, comma-separated: ok, error, denied, started")
	fs.StringVar(&f.since, "since", "", "only records at or after this: a duration back from now (1h, 7d) or RFC 3339")
	fs.StringVar(&f.until, "until", "", "only records before this: a duration back from now (1h, 7d) or RFC 3339")
}

// recordFilter selects audit records: every set field must match.
type recordFilter struct {
	agent                   string
	serial                  string // canonical
	events, tools, outcomes []string
	since, until            time.Time
	set                     bool
}

// build checks the flags, naming the first bad one.
func (f recordFilterFlags) build(now time.Time) (recordFilter, error) {
	out := recordFilter{agent: f.agent}
	out.set = f != (recordFilterFlags{})
	if err := checkGlob("--agent", f.agent); err != nil {
		return recordFilter{}, err
	}
	if f.serial != "" {
		s, err := pki.ParseSerial(f.serial)
		if err != nil {
			return recordFilter{}, usage(fmt.Errorf("--serial %q: %w", f.serial, err))
		}
		out.serial = s
	}
	var err error
	if out.events, err = globList("--event", f.event); err != nil {
		return recordFilter{}, err
	}
	if out.tools, err = globList("--tool", f.tool); err != nil {
		return recordFilter{}, err
	}
	for _, o := range splitList(f.outcome) {
		if !slices.Contains(auditOutcomes, o) {
			return recordFilter{}, usage(fmt.Errorf("--outcome %q: want ok, error, denied or started", o))
		}
		out.outcomes = append(out.outcomes, o)
	}
	if f.outcome != "" && len(out.outcomes) == 0 {
		return recordFilter{}, usage(fmt.Errorf("--outcome %q: want ok, error, denied or started", f.outcome))
	}
	if out.since, err = pointInTime("--since", f.since, now); err != nil {
		return recordFilter{}, err
	}
	if out.until, err = pointInTime("--until", f.until, now); err != nil {
		return recordFilter{}, err
	}
	if !out.since.IsZero() && !out.until.IsZero() && !out.since.Before(out.until) {
		return recordFilter{}, usage(fmt.Errorf("--since %s is not before --until %s", out.since.Format(time.RFC3339), out.until.Format(time.RFC3339)))
	}
	return out, nil
}

func checkGlob(flag, glob string) error {
	if _, err := path.Match(glob, ""); err != nil {
		return usage(fmt.Errorf("%s %q: not a valid glob (%v)", flag, glob, err))
	}
	return nil
}

func globList(flag, value string) ([]string, error) {
	list := splitList(value)
	if value != "" && len(list) == 0 {
		return nil, usage(fmt.Errorf("%s %q: empty", flag, value))
	}
	for _, g := range list {
		if err := checkGlob(flag, g); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// pointInTime reads --since/--until: RFC 3339, or a duration back from now
// ("1h", "7d").
func pointInTime(flag, value string, now time.Time) (time.Time, error) {
	if value == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, value); err == nil {
		return t, nil
	}
	if d, err := pki.ParseDuration(value); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usage(fmt.Errorf("%s %q: want a duration back from now (90m, 24h, 7d) or an RFC 3339 time", flag, value))
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// match reports whether r passes the filter. --serial matches the record's
// actor or its subject: the serial an issue created or a revoke named.
func (f recordFilter) match(r audit.Record) bool {
	if f.agent != "" {
		if r.Agent == nil {
			return false
		}
		if ok, _ := path.Match(f.agent, r.Agent.Name); !ok {
			return false
		}
	}
	if f.serial != "" && !slices.Contains(recordSerials(r), f.serial) {
		return false
	}
	if len(f.events) > 0 && !matchAny(f.events, r.Event) {
		return false
	}
	if len(f.tools) > 0 && !matchAny(f.tools, r.Tool) {
		return false
	}
	if len(f.outcomes) > 0 && !slices.Contains(f.outcomes, r.Outcome) {
		return false
	}
	if !f.since.IsZero() && r.Time.Before(f.since) {
		return false
	}
	if !f.until.IsZero() && !r.Time.Before(f.until) {
		return false
	}
	return true
}

// recordSerials are the serials a record is by or about, canonical.
func recordSerials(r audit.Record) []string {
	var out []string
	add := func(v any) {
		if s, ok := v.(string); ok && s != "" {
			if c, err := pki.ParseSerial(s); err == nil {
				out = append(out, c)
			}
		}
	}
	if r.Agent != nil {
		add(r.Agent.Serial)
	}
	add(r.Args["serial"])
	add(r.Result["serial"])
	return out
}

// about is what a record was about, for the human view: which certificate
// an issue or revoke concerned. Empty when there is nothing to add.
func about(r audit.Record) string {
	str := func(m map[string]any, k string) string {
		s, _ := m[k].(string)
		return s
	}
	first := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	var parts []string
	switch r.Event {
	case audit.EventRevoke:
		if s := first(str(r.Result, "serial"), str(r.Args, "serial")); s != "" {
			parts = append(parts, "serial "+s)
		}
		if n := str(r.Result, "name"); n != "" {
			parts = append(parts, "name "+n)
		}
		if why := str(r.Args, "reason"); why != "" {
			parts = append(parts, "reason "+why)
		}
	case audit.EventDisconnect:
		if id := str(r.Args, "id"); id != "" {
			parts = append(parts, "connection "+id)
		}
		if s := str(r.Args, "serial"); s != "" {
			parts = append(parts, "serial "+s)
		}
		if closed, ok := r.Result["closed"].([]any); ok {
			parts = append(parts, fmt.Sprintf("%d closed", len(closed)))
		}
	case audit.EventIssueClient:
		if n := first(str(r.Result, "name"), str(r.Args, "name")); n != "" {
			parts = append(parts, "name "+n)
		}
		if role := first(str(r.Result, "role"), str(r.Args, "role")); role != "" {
			parts = append(parts, "role "+role)
		}
		if s := str(r.Result, "serial"); s != "" {
			parts = append(parts, "serial "+s)
		}
	}
	return termSafe(strings.Join(parts, ", "))
}

func newAuditQueryCmd(e *env, g *globals) *cobra.Command {
	var (
		ff     recordFilterFlags
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Find audit records by agent, serial, event, tool, outcome and time",
		Long: `Find audit records, oldest first, across the current trail file and the
rotated ones. Filters combine: a record must match every one given. The
trail's chain is not checked here: 'nefia audit verify' does that.`,
		Example: `  nefia audit query --event mtls.revoke --since 7d
  nefia audit query --agent 'claude-*' --outcome denied --since 2026-11-01T00:00:00Z
  nefia audit query --serial 3f9a0c1e... --json | jq .`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usage(fmt.Errorf("--limit %d: want 0 (no limit) or more", limit))
			}
			filter, err := ff.build(e.clock.Now())
			if err != nil {
				return err
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(e.stdout)
			var n int
			errEnough := errors.New("enough")
			err = audit.Scan(s.auditDir(), func(r audit.Record) error {
				if !filter.match(r) {
					return nil
				}
				if asJSON {
					if err := enc.Encode(r); err != nil {
						return err
					}
				} else {
					printRecord(e.stdout, r)
				}
				if n++; limit > 0 && n >= limit {
					return errEnough
				}
				return nil
			})
			if err != nil && !errors.Is(err, errEnough) {
				return err
			}
			if n == 0 && !asJSON {
				fmt.Fprintln(e.stderr, "no audit record matches")
			}
			return nil
		},
	}
	ff.register(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many records (0: no limit)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON record per line")
	return cmd
}
