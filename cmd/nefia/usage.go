package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nefia/nefia/server"
)

// typedUsageErrors makes every check cobra itself performs return a
// usageError, so exitCode classifies them with errors.As like any other
// error instead of matching cobra's message text: flag parsing (through the
// flag error func, which subcommands inherit), positional arguments (each
// command's Args), and required flags (checked here before RunE; cobra's own
// check is switched off because it returns an untyped error).
func typedUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usage(err)
				}
				return nil
			}
		} else if c.HasSubCommands() {
			c.Args = groupArgs
		}
		if run := c.RunE; run != nil {
			required := requiredFlags(c)
			c.RunE = func(cmd *cobra.Command, a []string) error {
				for _, name := range required {
					if !cmd.Flags().Changed(name) {
						return usage(fmt.Errorf("--%s is required; see '%s --help'", name, cmd.CommandPath()))
					}
				}
				return run(cmd, a)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// requiredFlags returns the flags MarkFlagRequired marked on c, and removes
// the mark so that cobra leaves the check to typedUsageErrors.
func requiredFlags(c *cobra.Command) []string {
	var names []string
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if v, ok := f.Annotations[cobra.BashCompOneRequiredFlag]; ok && len(v) == 1 && v[0] == "true" {
			names = append(names, f.Name)
			delete(f.Annotations, cobra.BashCompOneRequiredFlag)
		}
	})
	return names
}

// version is set at link time by release builds
// (-ldflags "-X main.version=1.2.3"); otherwise the server's protocol-facing
// version is used.
var version = ""

// versionString is what 'nefia --version' prints: the version and the
// commit it was built from, when the build recorded one (go build in a git
// checkout does; go run and -buildvcs=false do not).
func versionString() string {
	v := version
	if v == "" {
		v = server.Version
	}
	commit, modified := "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if len(commit) > 12 && commit != "unknown" {
		commit = commit[:12]
	}
	if modified {
		commit += "-dirty"
	}
	return strings.Join([]string{v, "commit " + commit}, ", ")
}
