package external

import (
	"strings"
	"testing"
)

// The comparison is only fair if stunnel and nginx enforce the same policy
// as nefia: TLS 1.3 only and a client certificate from nefia's CA.
func TestConfigsEnforceNefiasPolicy(t *testing.T) {
	p := Params{Dir: "/w", Listen: "127.0.0.1:1", Backend: "127.0.0.1:2", Cert: "/s.crt", Key: "/s.key", CA: "/ca.crt", StreamModule: "/m.so"}
	for _, tc := range []struct {
		name   string
		render func(Params) ([]byte, error)
		want   []string
	}{
		{"stunnel", StunnelConfig, []string{"accept = 127.0.0.1:1", "connect = 127.0.0.1:2", "CAfile = /ca.crt", "verifyChain = yes", "requireCert = yes", "sslVersionMin = TLSv1.3"}},
		{"nginx", NginxConfig, []string{"listen 127.0.0.1:1 ssl;", "proxy_pass 127.0.0.1:2;", "ssl_client_certificate /ca.crt;", "ssl_verify_client on;", "ssl_protocols TLSv1.3;", "load_module /m.so;"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.render(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s config lacks %q:\n%s", tc.name, w, out)
				}
			}
		})
	}
}
