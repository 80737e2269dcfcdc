package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/tools"
)

// loadPolicy builds the authorization policy of cfg (mcp.policy; the
// built-in default when it is absent or empty). config.Validate has already
// checked the rules; policy.New checks them again so that no path builds a
// policy from unchecked rules.
func loadPolicy(cfg config.Config) (*policy.Policy, error) {
	rules := make([]policy.Rule, len(cfg.MCP.Policy))
	for i, r := range cfg.MCP.Policy {
		rules[i] = policy.Rule{Role: pki.Role(r.Match.Role), Name: r.Match.Name, Allow: r.Allow}
	}
	p, err := policy.New(rules)
	if err != nil {
		return nil, usage(fmt.Errorf("mcp.policy: %w", err))
	}
	return p, nil
}

func newPolicyCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Explain the authorization policy (mcp.policy)",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newPolicyCheckCmd(e, g))
	return cmd
}

// errDenied makes `policy check` exit 1 for a denied call, as scripts expect
// of a check that ran and said no (2 and 3 mean it could not run).
type errDenied struct{ d policy.Decision }

func (e errDenied) Error() string { return e.d.Tool + " is denied: " + e.d.Reason }

// ExitCode tells main which status this error exits with.
func (errDenied) ExitCode() int { return 1 }

// policyReport is what `policy check` prints, as text or (--json) as is.
type policyReport struct {
	Name   string   `json:"name"`
	Role   pki.Role `json:"role"`
	Config string   `json:"config"`
	policy.Decision
	// NefiaTools are nefia's own tools this identity may call (upstream
	// tools are not known to the CLI).
	NefiaTools []string `json:"nefia_tools"`
}

func newPolicyCheckCmd(e *env, g *globals) *cobra.Command {
	var name, role, tool string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check --name NAME --role ROLE --tool TOOL",
		Short: "Say whether a certificate may call a tool, and why",
		Long: `Decide, as the gateway would, whether a certificate with this name and role
may call a tool under the configured policy (mcp.policy in nefia.yaml, or the
built-in default when that is absent or empty), and explain the decision: the
rule that allows the call, or why it is denied.

Exit 0 when the call is allowed, 1 when it is denied, 2 for bad flags or an
invalid nefia.yaml.`,
		Example: `  nefia policy check --name ci-build --role agent --tool tickets.create
  nefia policy check --name alice --role operator --tool nefia.mtls.revoke --json
  if nefia policy check --name bot --role agent --tool fs.read_file >/dev/null 2>&1; then echo allowed; fi`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := checkFlags(name, role, tool)
			if err != nil {
				return err
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			loaded, err := config.Load(s.configPath)
			if err != nil {
				return err
			}
			p, err := loadPolicy(loaded.Config)
			if err != nil {
				return err
			}
			agent := identity.Agent{Name: name, Role: r, Transport: identity.TransportCLI}
			rep := policyReport{Name: name, Role: r, Config: loaded.Path, Decision: p.Decide(agent, tool),
				NefiaTools: p.Allowed(agent, tools.Names())}
			if rep.NefiaTools == nil {
				rep.NefiaTools = []string{}
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return fmt.Errorf("write the report: %w", err)
				}
			} else {
				printPolicyReport(e.stdout, rep, loaded.Exists)
			}
			if !rep.Allowed {
				return errDenied{rep.Decision}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "certificate name (CN), e.g. ci-build")
	f.StringVar(&role, "role", "", "certificate role: agent or operator")
	f.StringVar(&tool, "tool", "", "tool name, e.g. nefia.mtls.status or tickets.create")
	f.BoolVar(&asJSON, "json", false, "print the decision as JSON")
	return cmd
}

// checkFlags validates the flags before anything is read: a certificate
// with an impossible name or role cannot exist, so asking about it is a
// mistake to report, not a question to answer.
func checkFlags(name, role, tool string) (pki.Role, error) {
	if name == "" {
		return "", usage(errors.New("--name is required: the certificate name (CN) to check"))
	}
	if err := pki.ValidateName(name); err != nil {
		return "", usage(fmt.Errorf("--name: %w", err))
	}
	if role != string(pki.RoleAgent) && role != string(pki.RoleOperator) {
		return "", usage(fmt.Errorf("--role %q: want agent or operator", role))
	}
	if tool == "" {
		return "", usage(errors.New("--tool is required: the tool name to check, e.g. nefia.mtls.status"))
	}
	return pki.Role(role), nil
}

func printPolicyReport(w io.Writer, r policyReport, configExists bool) {
	if r.Allowed {
		fmt.Fprintf(w, "allowed: %q (role %s) may call %s\n", r.Name, r.Role, r.Tool)
	} else {
		fmt.Fprintf(w, "denied: %q (role %s) may not call %s\n", r.Name, r.Role, r.Tool)
	}
	src := "mcp.policy in " + r.Config
	if r.Source == policy.SourceDefault {
		src = "built-in default (no mcp.policy in " + r.Config + ")"
		if !configExists {
			src = "built-in default (no config file at " + r.Config + ")"
		}
	}
	fmt.Fprintf(w, "  policy: %s\n", src)
	if r.Allowed {
		fmt.Fprintf(w, "  rule:   %s[%d] %s, pattern %q\n", r.Source, r.Rule, r.Match, r.Pattern)
	} else {
		fmt.Fprintf(w, "  reason: %s\n", r.Reason)
	}
	nefia := "none"
	if len(r.NefiaTools) > 0 {
		nefia = strings.Join(r.NefiaTools, ", ")
	}
	fmt.Fprintf(w, "  nefia tools it may call: %s\n", nefia)
}
