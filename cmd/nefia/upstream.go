package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/spf13/cobra"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/upstream"
)

// newUpstreams builds the manager of cfg's mcp.upstreams, with the
// assertion key of the state directory (created on first use). With no
// upstreams it starts nothing and creates no key.
func newUpstreams(s *session, cfg config.Config) (*upstream.Manager, error) {
	opts := upstream.Options{Upstreams: cfg.MCP.Upstreams, Logger: s.log, ClientVersion: server.Version}
	if len(cfg.MCP.Upstreams) > 0 {
		signer, err := upstream.LoadSigner(s.store)
		if err != nil {
			return nil, err
		}
		opts.Signer = signer
	}
	return upstream.New(opts), nil
}

func newUpstreamCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upstream",
		Short: "Inspect the MCP servers behind the gateway (mcp.upstreams)",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newUpstreamKeyCmd(e, g), newUpstreamListCmd(e, g))
	return cmd
}

func newUpstreamKeyCmd(e *env, g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Print the public key upstreams verify identity assertions with",
		Long: `Print the PEM public key (ECDSA P-256) whose private half signs the
identity assertions nefia sends to upstream MCP servers
(params._meta["io.nefia/assertion"], header Nefia-Assertion). It is also the
file upstream_assertion.pub in the state directory. The key is created on
first use.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			signer, err := upstream.LoadSigner(s.store)
			if err != nil {
				return err
			}
			pem, err := signer.PublicKeyPEM()
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(pem)
			return err
		},
	}
}

// upstreamRow is one line of `upstream list`.
type upstreamRow struct {
	Name        string `json:"name"`
	Transport   string `json:"transport"`
	Target      string `json:"target"`
	CallTimeout string `json:"call_timeout"`
	Session     string `json:"session"`
	// Probed fields, with --probe only.
	State     string   `json:"state,omitempty"`
	Tools     []string `json:"tools,omitempty"`
	LastError string   `json:"last_error,omitempty"`
}

func newUpstreamListCmd(e *env, g *globals) *cobra.Command {
	var asJSON, probe bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the configured upstreams; --probe starts each and lists its tools",
		Long: `List mcp.upstreams from nefia.yaml. This shows the configuration: a
running gateway's live state is not visible from here. --probe starts every
upstream the way the gateway would (commands are run, URLs are called),
lists its tools and stops it again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			loaded, err := config.Load(s.configPath)
			if err != nil {
				return err
			}
			rows := make([]upstreamRow, 0, len(loaded.MCP.Upstreams))
			for _, u := range loaded.MCP.Upstreams {
				r := upstreamRow{Name: u.Name, Transport: "stdio", Target: strings.Join(u.Command, " "), CallTimeout: u.Timeout().String(), Session: config.SessionShared}
				if u.Session != "" {
					r.Session = u.Session
				}
				if u.URL != "" {
					r.Transport, r.Target = "http", u.URL
				}
				rows = append(rows, r)
			}
			if probe && len(rows) > 0 {
				if err := probeUpstreams(s, loaded.Config, rows); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(e.stdout, "no upstreams in %s (mcp.upstreams)\n", loaded.Path)
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprint(tw, "NAME\tTRANSPORT\tTARGET\tTIMEOUT")
			if probe {
				fmt.Fprint(tw, "\tSTATE\tTOOLS")
			}
			fmt.Fprintln(tw)
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s", r.Name, r.Transport, termSafe(r.Target), r.CallTimeout)
				if probe {
					state := r.State
					if r.LastError != "" {
						state += ": " + termSafe(r.LastError)
					}
					fmt.Fprintf(tw, "\t%s\t%d", state, len(r.Tools))
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&probe, "probe", false, "start each upstream, list its tools and stop it")
	return cmd
}

// probeUpstreams runs the upstreams against a throwaway MCP server, the
// same code path as the gateway, and records what each offered.
func probeUpstreams(s *session, cfg config.Config, rows []upstreamRow) error {
	m, err := newUpstreams(s, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	srv := mcpserver.NewMCPServer("nefia-probe", server.Version)
	if err := m.Register(srv); err != nil {
		return err
	}
	for i, st := range m.Status() {
		rows[i].State, rows[i].LastError = st.State, st.LastError
		for _, name := range m.Tools(st.Name) {
			rows[i].Tools = append(rows[i].Tools, name)
		}
	}
	return nil
}
