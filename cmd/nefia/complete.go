package main

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// registerCompletions makes shell completion complete flag values, not just
// commands and flag names: fixed choices, and serials and names from the
// inventory. It runs once the command tree is built, so each command's
// file stays as it is.
func registerCompletions(root *cobra.Command, e *env, g *globals) {
	fixed := func(values ...string) cobra.CompletionFunc {
		return func(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return withPrefix(values, prefix), cobra.ShellCompDirectiveNoFileComp
		}
	}
	states := make([]string, len(listStates))
	for i, s := range listStates {
		states[i] = string(s)
	}
	register := func(path []string, flag string, f cobra.CompletionFunc) {
		cmd, _, err := root.Find(path)
		if err != nil || cmd.Flag(flag) == nil {
			return // a command or flag renamed: nothing to complete, not a crash
		}
		_ = cmd.RegisterFlagCompletionFunc(flag, f)
	}
	register(nil, "log-level", fixed("debug", "info", "warn", "error"))
	register(nil, "log-format", fixed("text", "json"))
	register([]string{"mtls", "issue-client"}, "role", fixed(string(pki.RoleAgent), string(pki.RoleOperator)))
	register([]string{"mtls", "list"}, "state", fixed(states...))
	register([]string{"mtls", "list"}, "name", g.completeNames(e, false))
	register([]string{"mtls", "revoke"}, "name", g.completeNames(e, true))
	register([]string{"mtls", "revoke"}, "serial", g.completeSerials(e))
}

// completionInventory reads the inventory for completion: quietly (no log
// line may reach the shell) and with nothing on failure, since a broken or
// missing state directory must not turn a Tab press into an error.
func (g *globals) completionInventory(e *env) []pki.ListedCert {
	dir, err := config.ResolveStateDir(g.stateDir, e.getenv)
	if err != nil {
		return nil
	}
	list, err := pki.NewStore(dir, pki.WithClock(e.clock), pki.WithLogger(slog.New(slog.DiscardHandler))).List()
	if err != nil {
		return nil
	}
	return list
}

// revocable is what a revocation would stop.
func revocable(c pki.ListedCert) bool {
	return c.State == pki.StateActive || c.State == pki.StateNotYet
}

// completeNames completes certificate names, of revocable certificates only
// when onlyRevocable.
func (g *globals) completeNames(e *env, onlyRevocable bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var names []string
		for _, c := range g.completionInventory(e) {
			if (!onlyRevocable || revocable(c)) && !slices.Contains(names, c.Name) && safeCompletion(c.Name) {
				names = append(names, c.Name)
			}
		}
		return withPrefix(names, prefix), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSerials completes the serials of revocable certificates, each
// described by its name and role.
func (g *globals) completeSerials(e *env) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, c := range g.completionInventory(e) {
			if revocable(c) && strings.HasPrefix(c.Serial, strings.ToLower(prefix)) && safeCompletion(c.Name) {
				out = append(out, cobra.CompletionWithDesc(c.Serial, c.Name+" ("+string(c.Role)+", "+string(c.State)+")"))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// safeCompletion keeps a value with control characters (a newline or tab
// would split or forge completion lines) out of the shell's input.
func safeCompletion(s string) bool { return termSafe(s) == s && !strings.ContainsAny(s, "\t\n") }

func withPrefix(values []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, v := range values {
		if strings.HasPrefix(v, prefix) {
			out = append(out, v)
		}
	}
	return out
}
