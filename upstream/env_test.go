package upstream_test

import (
	"slices"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// TestCommandUpstreamEnvironment: a command upstream inherits only a few
// variables of nefia's environment (PATH, HOME and the like) plus its env:
// entry and the names in its inherit_env: entry, never the rest, which
// may hold secrets; it used to inherit all of it. Not parallel: it sets a variable in the test process's environment.
func TestCommandUpstreamEnvironment(t *testing.T) {
	t.Setenv("NEFIA_TEST_SECRET", "s3cret")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
	t.Setenv("PATH", "/usr/bin:/bin")
	t.Setenv("NEFIA_TEST_TOKEN", "t0ken")
	f := startGateway(t, func(pub string) config.Upstream {
		up := stdioUpstream("up", pub)
		up.Env["EXTRA"] = "1"
		up.InheritEnv = []string{"NEFIA_TEST_TOKEN"}
		return up
	})
	bot := f.g.Client(pkitest.KeyPair(t, f.g.Issue("bot", pki.RoleAgent, time.Hour)))
	got := servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "env"})
	var env []string
	for _, k := range got["env"].([]any) {
		env = append(env, k.(string))
	}
	for _, k := range []string{"PATH", "EXTRA", envRole, "NEFIA_TEST_TOKEN"} {
		if !slices.Contains(env, k) {
			t.Errorf("the upstream's environment %v lacks %s", env, k)
		}
	}
	for _, k := range []string{"NEFIA_TEST_SECRET", "AWS_SECRET_ACCESS_KEY"} {
		if slices.Contains(env, k) {
			t.Errorf("the upstream inherited %s from nefia's environment: %v", k, env)
		}
	}
}
