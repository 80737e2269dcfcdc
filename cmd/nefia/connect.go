package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/bridge"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/renewal"
)

// exitConnect is the exit status of 'nefia mcp connect' when the gateway
// cannot be reached, refuses the certificate, or the connection is lost with
// a request in flight: the caller's files and flags were fine (2), and nefia
// is not broken (3), so a supervisor can tell "retry later or fix the
// certificate" from both.
const exitConnect = 1

// connectError is a failure to connect or stay connected (exit 1). Its
// message drops the "bridge: " prefixes, which are noise at a prompt.
type connectError struct{ err error }

func (e connectError) Error() string { return strings.ReplaceAll(e.err.Error(), "bridge: ", "") }
func (e connectError) Unwrap() error { return e.err }

// ExitCode tells main which status this error exits with.
func (connectError) ExitCode() int { return exitConnect }

// connectFlags are the flags of 'nefia mcp connect'.
type connectFlags struct {
	addr, serverName string
	cert, key, ca    string
	name, certDir    string
}

func newConnectCmd(e *env, g *globals) *cobra.Command {
	var f connectFlags
	var noRenew bool
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Bridge a stdio MCP client to the gateway over mutual TLS",
		Long: `Bridge a stdio MCP client to a nefia gateway over mutual TLS.

MCP clients that can only spawn a server on stdin/stdout (Claude Desktop,
Claude Code, the MCP Inspector) run this command as their server: it dials
the gateway with TLS 1.3, presents the client certificate, verifies the
gateway against the CA, and then carries newline-delimited JSON-RPC between
its stdin/stdout and the connection. Stdout carries JSON-RPC only; logs go
to stderr.

A refused certificate (revoked, expired, another CA's) or an unreachable
gateway ends the command at once with one line on stderr naming the cause.
If the connection drops while no request is in flight the command
reconnects by itself; with a request in flight it answers that request with
a JSON-RPC error and exits.

The command renews its certificate by itself at two thirds of its lifetime
(± 5%), through the gateway's nefia.mtls.renew over its own mTLS: a new key
is made here, the key and certificate files are replaced atomically (0600;
keep the directory 0700), and the client's next message goes on a new
connection with the new certificate while the old one answers what it has
in flight. A failed renewal is retried with backoff and logged at warn each
time; if the certificate expires first the command exits with one line
saying so. --no-renew turns this off (the certificate is then used until it
expires).

Exit status: 0 when the client closed stdin (or on SIGINT/SIGTERM), 1 when
the gateway could not be reached, refused the certificate, was lost with
a request in flight, or the certificate expired unrenewed, 2 for bad flags
or unreadable certificate files.`,
		Example: `  nefia mcp connect --name claude-agent          # ./nefia-client-certs/claude-agent.{crt,key}, ca.crt
  nefia mcp connect --name ops --cert-dir ~/certs --addr gateway.lan:19821
  nefia mcp connect --cert agent.crt --key agent.key --ca ca.crt --addr 10.99.0.1:19821

  # Claude Desktop / Claude Code (mcpServers):
  #   {"nefia": {"command": "nefia", "args": ["mcp", "connect", "--name", "claude-agent",
  #              "--cert-dir", "/home/me/nefia-client-certs"]}}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(e.stderr, g.logLevel, g.logFormat)
			if err != nil {
				return err
			}
			files, err := f.files()
			if err != nil {
				return err
			}
			if err := finishPendingRenewal(files); err != nil {
				return err
			}
			cfg, err := files.load()
			if err != nil {
				return err
			}
			addr, err := f.gatewayAddr(g, e)
			if err != nil {
				return err
			}
			cfg.ServerName = f.serverName
			if keyExposed(files.key) {
				log.Warn("the private key file is readable by other users; chmod 600 it", "key", files.key)
			}
			opts := bridge.Options{Addr: addr, TLS: cfg, Logger: log}
			if !noRenew {
				opts.Renew = renewFunc(addr, cfg, files, log)
				if dirExposed(filepath.Dir(files.key)) {
					log.Warn("the certificate directory is open to other users; renewed keys are written there, chmod 700 it", "dir", filepath.Dir(files.key))
				}
			}
			err = bridge.Run(cmd.Context(), e.stdin, e.stdout, opts)
			switch {
			case err == nil, errors.Is(err, context.Canceled):
				return nil
			case errors.Is(err, bridge.ErrExpired):
				return connectError{errors.New(termSafe(err.Error()))}
			case errors.Is(err, bridge.ErrUntrusted):
				return connectError{fmt.Errorf("%w (--ca %s)", err, files.ca)}
			}
			return connectError{err}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", "", "gateway host:port (default: mcp.mtls.listen_addr from nefia.yaml, else 127.0.0.1:19821)")
	fl.StringVar(&f.name, "name", "", "client certificate name: use NAME.crt, NAME.key and ca.crt from --cert-dir")
	fl.StringVar(&f.certDir, "cert-dir", "./nefia-client-certs", "directory --name picks files from (what 'nefia mtls issue-client --out-dir' wrote)")
	fl.StringVar(&f.cert, "cert", "", "client certificate file (PEM), instead of --name")
	fl.StringVar(&f.key, "key", "", "client private key file (PEM), instead of --name")
	fl.StringVar(&f.ca, "ca", "", "CA certificate the gateway must chain to (default with --name: ca.crt in --cert-dir)")
	fl.StringVar(&f.serverName, "server-name", "", "name to verify in the gateway's certificate (default: the host of --addr)")
	fl.BoolVar(&noRenew, "no-renew", false, "do not renew the certificate at two thirds of its lifetime: use it until it expires")
	return cmd
}

// renewFunc renews the bridge's certificate at the gateway at addr with
// the same steps as 'nefia mtls renew', writing the new pair over files.
// A certificate the gateway issued but that could not be written is still
// used by this process (its sessions carry on), and the failure is logged:
// the files keep the previous pair, which the next start presents. A newer
// pair already in the files (a second bridge on the same directory renewed
// first) is adopted instead of renewing again; the check and the renewal
// run under the files' lock (renewal.Files.Lock), so two bridges never
// both renew.
func renewFunc(addr string, cfg *tls.Config, files certFiles, log *slog.Logger) bridge.RenewFunc {
	rf := renewal.Files{Cert: files.cert, Key: files.key}
	return func(ctx context.Context, cur tls.Certificate) (tls.Certificate, error) {
		rc := cfg.Clone()
		rc.Certificates, rc.GetClientCertificate = []tls.Certificate{cur}, nil
		res, err := renewal.Renew(ctx, renewal.Request{Addr: addr, TLS: rc, Name: cur.Leaf.Subject.CommonName,
			Files: rf, Current: cur})
		if err == nil && res.Adopted {
			log.Info("adopted the certificate another process renewed in the same files", "cert", files.cert)
		}
		if errors.Is(err, renewal.ErrWrite) {
			log.Error("the renewed certificate is in use but could not be written; the files keep the previous one", "cert", files.cert, "error", err)
			return res.KeyPair, nil
		}
		return res.KeyPair, err
	}
}

// dirExposed reports whether a directory can be entered by group or others.
func dirExposed(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o077 != 0
}

// certFiles are the three files a connection needs, and the flag that
// named each, for error messages.
type certFiles struct {
	cert, key, ca             string
	certFlag, keyFlag, caFlag string
}

// files resolves --name/--cert-dir or --cert/--key/--ca into paths.
func (f connectFlags) files() (certFiles, error) {
	if f.name != "" {
		if f.cert != "" || f.key != "" {
			return certFiles{}, usage(errors.New("--name picks NAME.crt and NAME.key from --cert-dir: give either --name or --cert and --key, not both"))
		}
		if err := pki.ValidateName(f.name); err != nil {
			return certFiles{}, usage(fmt.Errorf("--name: %w", err))
		}
		flag := "--name " + f.name
		c := certFiles{
			cert: filepath.Join(f.certDir, f.name+".crt"), key: filepath.Join(f.certDir, f.name+".key"),
			ca: f.ca, certFlag: flag, keyFlag: flag, caFlag: "--ca",
		}
		if c.ca == "" {
			c.ca, c.caFlag = filepath.Join(f.certDir, "ca.crt"), flag
		}
		return c, nil
	}
	var missing []string
	for _, m := range []struct{ flag, val string }{{"--cert", f.cert}, {"--key", f.key}, {"--ca", f.ca}} {
		if m.val == "" {
			missing = append(missing, m.flag)
		}
	}
	if len(missing) > 0 {
		return certFiles{}, usage(fmt.Errorf("missing %s: give --name NAME (with --cert-dir) or all of --cert, --key and --ca", strings.Join(missing, ", ")))
	}
	return certFiles{cert: f.cert, key: f.key, ca: f.ca, certFlag: "--cert", keyFlag: "--key", caFlag: "--ca"}, nil
}

// load reads the key pair and the CA into a client TLS configuration. Every
// failure is the caller's to fix (exit 2) and names the flag and the file.
func (c certFiles) load() (*tls.Config, error) {
	read := func(flag, path string) ([]byte, error) {
		data, err := readLimited(path, 1<<20)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usage(fmt.Errorf("%s: %s does not exist; on the gateway's host, 'nefia mtls issue-client --name NAME --out-dir DIR' writes NAME.crt, NAME.key and ca.crt", flag, path))
		}
		if err != nil {
			return nil, usage(fmt.Errorf("%s: %w", flag, err))
		}
		return data, nil
	}
	certPEM, err := read(c.certFlag, c.cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(c.keyFlag, c.key)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(c.caFlag, c.ca)
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, usage(fmt.Errorf("%s: %s and %s are not a matching certificate and private key: %w", c.certFlag, c.cert, c.key, err))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, usage(fmt.Errorf("%s: %s holds no PEM certificate", c.caFlag, c.ca))
	}
	return &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13}, nil
}

// gatewayAddr is --addr, else the listen address of this host's nefia.yaml
// (so that on the gateway's own host no flag is needed), with an unspecified
// listen host (0.0.0.0, ::) dialled on loopback.
func (f connectFlags) gatewayAddr(g *globals, e *env) (string, error) {
	addr := f.addr
	if addr == "" {
		path, err := config.ResolvePath(g.configPath, e.getenv)
		if err != nil {
			return "", fmt.Errorf("find the config file: %w (set --addr, --config or NEFIA_CONFIG)", err)
		}
		loaded, err := config.Load(path)
		if err != nil {
			return "", err
		}
		addr = loaded.Config.MCP.MTLS.ListenAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", usage(fmt.Errorf("--addr %q: want host:port, for example 127.0.0.1:19821", addr))
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// keyExposed reports whether the key file can be read by group or
// others.
func keyExposed(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o077 != 0
}
