// Package external renders the configurations of the TLS terminators nefia
// is compared with, stunnel4 and nginx (stream module), both from Debian
// packages, fronting nefia-bench's plain ping backend with nefia's own
// certificates and client-certificate policy (TLS 1.3 only, a certificate
// from nefia's CA required).
package external

import (
	"bytes"
	_ "embed"
	"errors"
	"os"
	"os/exec"
	"text/template"
)

// Params fill the templates.
type Params struct {
	// Dir is a working directory for the server's own files (nginx's pid).
	Dir string
	// Listen is the TLS address, Backend the plain ping server's.
	Listen, Backend string
	// Cert and Key are nefia's server certificate and key; CA is nefia's CA
	// certificate, which client certificates must chain to.
	Cert, Key, CA string
	// StreamModule is the path of nginx's dynamic stream module.
	StreamModule string
}

var (
	//go:embed stunnel.conf.tmpl
	stunnelTmpl string
	//go:embed nginx.conf.tmpl
	nginxTmpl string
)

// StunnelConfig renders stunnel's configuration.
func StunnelConfig(p Params) ([]byte, error) { return render(stunnelTmpl, p) }

// NginxConfig renders nginx's configuration.
func NginxConfig(p Params) ([]byte, error) { return render(nginxTmpl, p) }

func render(text string, p Params) ([]byte, error) {
	t, err := template.New("").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ErrMissing is returned when a comparison server is not installed.
var ErrMissing = errors.New("external: not installed")

// Stunnel returns the path of the stunnel binary (Debian's stunnel4).
func Stunnel() (string, error) {
	for _, name := range []string{"stunnel4", "stunnel"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrMissing
}

// Nginx returns the paths of nginx and of its stream module
// (libnginx-mod-stream).
func Nginx() (bin, module string, err error) {
	bin, err = exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			return "", "", ErrMissing
		}
		bin = "/usr/sbin/nginx"
	}
	for _, m := range []string{"/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"} {
		if _, err := os.Stat(m); err == nil {
			return bin, m, nil
		}
	}
	return "", "", ErrMissing
}
