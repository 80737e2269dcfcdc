package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// env is what every command needs from the outside world; tests supply their
// own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	clock          pki.Clock
	// writeBundle writes a client bundle; nil means pki.WriteBundle. Tests
	// make it fail to prove a failed write revokes what was issued.
	writeBundle func(dir string, iss *pki.Issued, force bool) (pki.BundlePaths, error)
}

// globals are the persistent flags, resolved once per invocation.
type globals struct {
	stateDir   string
	configPath string
	logLevel   string
	logFormat  string
}

// run executes one nefia command line. It never exits the process, so every
// command can be tested in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, clock: pki.SystemClock{}}
	return e.run(ctx, args)
}

func (e *env) run(ctx context.Context, args []string) error {
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	return root.ExecuteContext(ctx)
}

func newRootCmd(e *env) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "nefia",
		Short: "An MCP gateway guarded by mutual TLS",
		Long: `nefia serves MCP tools to AI agents that present a client certificate
issued by its own CA, and exposes that certificate management as MCP tools.

  nefia mtls init                       # create the CA and server certificate
  nefia mtls issue-client --name agent  # a client certificate for an agent
  nefia mcp serve                       # serve MCP (stdio, or mTLS once enabled)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          groupArgs,
		RunE:          groupRun,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", "", "state directory (env NEFIA_STATE_DIR; default $XDG_STATE_HOME/nefia)")
	pf.StringVar(&g.configPath, "config", "", "config file (env NEFIA_CONFIG; default $XDG_CONFIG_HOME/nefia/nefia.yaml)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newMTLSCmd(e, g), newMCPCmd(e, g), newAuditCmd(e, g), newPolicyCmd(e, g), newUpstreamCmd(e, g))
	root.Version = versionString()
	root.SetVersionTemplate("nefia {{.Version}}\n")
	addSessionCmds(root, e, g)
	typedUsageErrors(root)
	registerCompletions(root, e, g)
	return root
}

// session is what a command works with once the global flags are resolved.
type session struct {
	env        *env
	stateDir   string
	configPath string
	store      *pki.Store
	log        *slog.Logger
}

func (g *globals) open(e *env) (*session, error) {
	log, err := newLogger(e.stderr, g.logLevel, g.logFormat)
	if err != nil {
		return nil, err
	}
	dir, err := config.ResolveStateDir(g.stateDir, e.getenv)
	if err != nil {
		return nil, fmt.Errorf("find the state directory: %w (set --state-dir or NEFIA_STATE_DIR)", err)
	}
	cfg, err := config.ResolvePath(g.configPath, e.getenv)
	if err != nil {
		return nil, fmt.Errorf("find the config file: %w (set --config or NEFIA_CONFIG)", err)
	}
	opts := []pki.Option{pki.WithClock(e.clock), pki.WithLogger(log)}
	if rec := openRecords(cfg, log); rec != nil { // mcp.mtls.store (issue 15)
		opts = append(opts, pki.WithRecords(rec))
	}
	return &session{env: e, stateDir: dir, configPath: cfg, store: pki.NewStore(dir, opts...), log: log}, nil
}

// newLogger builds the operational logger: tint's readable lines on stderr,
// or JSON for log shippers. Stdout is never used: in stdio mode it carries
// JSON-RPC.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usage(fmt.Errorf("--log-level %q: want debug, info, warn or error", level))
	}
	switch format {
	case "text":
		// tint puts an ESC inside a string value back raw when it colors
		// (tint v1.2.1 appendString), so peer strings in log attributes
		// (a refused certificate's name) are escaped first.
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w),
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				switch v := a.Value.Any().(type) {
				case string:
					a.Value = slog.StringValue(termSafe(v))
				case error:
					a.Value = slog.StringValue(termSafe(v.Error()))
				}
				return a
			}})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	}
	return nil, usage(fmt.Errorf("--log-format %q: want text or json", format))
}

// groupArgs and groupRun make a command that only groups subcommands refuse
// an unknown subcommand with a usage error instead of printing help and
// exiting 0, which would hide a typo in a script.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usage(fmt.Errorf("unknown command %q for %q; see '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath()))
	}
	return nil
}

func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// isTerminal reports whether w is a terminal, so colour codes never end up in
// a log file or a supervisor's journal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
