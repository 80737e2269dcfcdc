package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestValidateUpstreams(t *testing.T) {
	t.Parallel()
	stdio := Upstream{Name: "fs", Command: []string{"npx", "-y", "server"}}
	web := Upstream{Name: "tickets", URL: "https://tickets.internal:8443/mcp"}
	tests := []struct {
		name string
		ups  []Upstream
		want []string // substrings, one per expected problem; none means valid
	}{
		{name: "stdio and https", ups: []Upstream{stdio, web}},
		{name: "http on loopback", ups: []Upstream{{Name: "a", URL: "http://127.0.0.1:8080/mcp"}, {Name: "b", URL: "http://[::1]:1/mcp"}, {Name: "c", URL: "http://localhost/mcp"}}},
		{name: "everything set", ups: []Upstream{{Name: "t-1_x", URL: "https://x/mcp", HeadersFile: "/h", CAFile: "/ca", CertFile: "/c", KeyFile: "/k", CallTimeout: time.Second, Session: SessionShared}}},
		{name: "reserved name", ups: []Upstream{{Name: "nefia", Command: []string{"x"}}}, want: []string{`mcp.upstreams[0].name: "nefia" is reserved`}},
		{name: "duplicate name", ups: []Upstream{stdio, web, stdio}, want: []string{`mcp.upstreams[2].name: "fs" is already the name of mcp.upstreams[0]`}},
		{name: "bad names", ups: []Upstream{{Name: "", Command: []string{"x"}}, {Name: "Fs", Command: []string{"x"}}, {Name: "f.s", Command: []string{"x"}}, {Name: "1fs", Command: []string{"x"}}, {Name: strings.Repeat("a", 33), Command: []string{"x"}}},
			want: []string{`mcp.upstreams[0].name: must match`, `mcp.upstreams[1].name: must match`, `mcp.upstreams[2].name: must match`, `mcp.upstreams[3].name: must match`, `mcp.upstreams[4].name: must match`}},
		{name: "both command and url", ups: []Upstream{{Name: "a", Command: []string{"x"}, URL: "https://x"}}, want: []string{"mcp.upstreams[0]: has both command and url"}},
		{name: "neither", ups: []Upstream{{Name: "a"}}, want: []string{"mcp.upstreams[0]: needs command"}},
		{name: "empty program", ups: []Upstream{{Name: "a", Command: []string{""}}}, want: []string{"mcp.upstreams[0].command: the program"}},
		{name: "plain http elsewhere", ups: []Upstream{web, {Name: "b", URL: "http://tickets.internal/mcp"}}, want: []string{"mcp.upstreams[1].url: http is allowed on loopback only"}},
		{name: "other scheme", ups: []Upstream{{Name: "a", URL: "ftp://x/mcp"}}, want: []string{`mcp.upstreams[0].url: scheme must be https`}},
		{name: "relative url", ups: []Upstream{{Name: "a", URL: "/mcp"}}, want: []string{`mcp.upstreams[0].url: must be an absolute URL`}},
		{name: "credentials in url", ups: []Upstream{{Name: "a", URL: "https://u:p@x/mcp"}}, want: []string{`mcp.upstreams[0].url: must be an absolute URL`}},
		{name: "http options on stdio", ups: []Upstream{{Name: "a", Command: []string{"x"}, HeadersFile: "/h", CAFile: "/c"}}, want: []string{"mcp.upstreams[0].headers_file: applies to url", "mcp.upstreams[0].ca_file: applies to url"}},
		{name: "bad env name", ups: []Upstream{{Name: "a", Command: []string{"x"}, Env: map[string]string{"A=B": "c"}}}, want: []string{`mcp.upstreams[0].env: "A=B" is not an environment variable name`}},
		{name: "bad inherit_env name", ups: []Upstream{{Name: "a", Command: []string{"x"}, InheritEnv: []string{"TOKEN", ""}}}, want: []string{`mcp.upstreams[0].inherit_env: "" is not an environment variable name`}},
		{name: "inherit_env on url", ups: []Upstream{{Name: "a", URL: "https://x", InheritEnv: []string{"TOKEN"}}}, want: []string{"mcp.upstreams[0].inherit_env: applies to command"}},
		{name: "env on url", ups: []Upstream{{Name: "a", URL: "https://x", Env: map[string]string{"A": "b"}}}, want: []string{"mcp.upstreams[0].env: applies to command"}},
		{name: "cert without key", ups: []Upstream{{Name: "a", URL: "https://x", CertFile: "/c"}}, want: []string{"mcp.upstreams[0].key_file: cert_file and key_file go together"}},
		{name: "nul in path", ups: []Upstream{{Name: "a", URL: "https://x", CAFile: "a\x00b"}}, want: []string{"mcp.upstreams[0].ca_file: must not contain a NUL"}},
		{name: "timeout too short", ups: []Upstream{{Name: "a", URL: "https://x", CallTimeout: time.Millisecond}}, want: []string{"mcp.upstreams[0].call_timeout: must be between 100ms and 1h0m0s"}},
		{name: "per_client", ups: []Upstream{{Name: "a", URL: "https://x", Session: SessionPerClient}, {Name: "b", Command: []string{"x"}, Session: SessionPerClient, MaxSessions: 4}}},
		{name: "max_sessions out of range", ups: []Upstream{{Name: "a", URL: "https://x", Session: SessionPerClient, MaxSessions: -1}, {Name: "b", URL: "https://x", Session: SessionPerClient, MaxSessions: 1001}},
			want: []string{"mcp.upstreams[0].max_sessions: must be between 1 and 1000, got -1", "mcp.upstreams[1].max_sessions: must be between 1 and 1000, got 1001"}},
		{name: "max_sessions_per_client", ups: []Upstream{{Name: "a", URL: "https://x", Session: SessionPerClient, MaxSessions: 4, MaxSessionsPerClient: 5},
			{Name: "b", URL: "https://x", Session: SessionPerClient, MaxSessionsPerClient: -1}, {Name: "c", URL: "https://x", MaxSessionsPerClient: 1},
			{Name: "d", URL: "https://x", Session: SessionPerClient, MaxSessionsPerClient: 16}},
			want: []string{"mcp.upstreams[0].max_sessions_per_client: must be between 1 and max_sessions (4), got 5",
				"mcp.upstreams[1].max_sessions_per_client: must be between 1 and max_sessions (16), got -1",
				"mcp.upstreams[2].max_sessions_per_client: applies to session: per_client only"}},
		{name: "max_sessions on a shared upstream", ups: []Upstream{{Name: "a", URL: "https://x", MaxSessions: 4}}, want: []string{"mcp.upstreams[0].max_sessions: applies to session: per_client only"}},
		{name: "unknown session", ups: []Upstream{{Name: "a", URL: "https://x", Session: "solo"}}, want: []string{`mcp.upstreams[0].session: must be shared or per_client, got "solo"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			c.MCP.Upstreams = tt.ups
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d: %v", n, len(tt.want), err)
			}
		})
	}
}

func TestLoadUpstreams(t *testing.T) {
	t.Parallel()
	const file = `version: 1
mcp:
  upstreams:
    - name: fs
      command: [npx, -y, "@modelcontextprotocol/server-filesystem", /srv/shared]
      env: {NODE_OPTIONS: --max-old-space-size=256}
    - name: tickets
      url: https://tickets.internal:8443/mcp
      headers_file: /etc/nefia/tickets.headers
      call_timeout: 30s
`
	got, err := Load(writeFile(t, file))
	if err != nil {
		t.Fatal(err)
	}
	want := []Upstream{
		{Name: "fs", Command: []string{"npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"}, Env: map[string]string{"NODE_OPTIONS": "--max-old-space-size=256"}},
		{Name: "tickets", URL: "https://tickets.internal:8443/mcp", HeadersFile: "/etc/nefia/tickets.headers", CallTimeout: 30 * time.Second},
	}
	if !reflect.DeepEqual(got.MCP.Upstreams, want) {
		t.Errorf("upstreams = %+v, want %+v", got.MCP.Upstreams, want)
	}
	if d := got.MCP.Upstreams[0].Timeout(); d != DefaultUpstreamCallTimeout {
		t.Errorf("default timeout = %s, want %s", d, DefaultUpstreamCallTimeout)
	}
}

func TestLoadUpstreamErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		is      error
		want    string
	}{
		{name: "unknown key names the entry", content: "version: 1\nmcp:\n  upstreams:\n    - name: a\n      command: [x]\n    - name: b\n      url: https://x\n      headrs_file: /h\n", is: ErrUnknownKey, want: `:8: unknown key "mcp.upstreams[1].headrs_file"`},
		{name: "invalid value names the entry", content: "version: 1\nmcp:\n  upstreams:\n    - name: a\n      url: http://10.0.0.1/mcp\n", is: ErrInvalid, want: "mcp.upstreams[0].url: http is allowed on loopback only"},
		{name: "command is a string", content: "version: 1\nmcp:\n  upstreams:\n    - name: a\n      command: npx server\n", is: ErrMalformed, want: ":5:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(writeFile(t, tt.content))
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load() = %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}
