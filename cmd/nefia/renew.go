package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/spf13/cobra"

	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/tools"
)

// renewTimeout bounds the whole exchange with the gateway: dial,
// handshake, initialize and the renew call.
const renewTimeout = 30 * time.Second

// pendingSuffix names the staged certificate of a renewal whose key is
// already in place (see writeRenewed).
const pendingSuffix = ".renew"

func newRenewCmd(e *env, g *globals) *cobra.Command {
	var f connectFlags
	var revokePrevious, asJSON bool
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew this agent's own client certificate at a running gateway",
		Long: `Renew the client certificate NAME.crt in --cert-dir at a running gateway, over
mutual TLS with that very certificate: a new P-256 key is generated here (it
never leaves this host), the gateway signs it with the same name and role,
a new serial and the original lifetime, and NAME.key (0600) and NAME.crt are
replaced. The old certificate stays valid until it expires unless
--revoke-previous. A revoked or expired certificate cannot renew: ask an
operator for a new one.

Files: the new certificate is staged as NAME.crt.renew, then NAME.key is
replaced atomically, then NAME.crt.renew is renamed over NAME.crt. A crash
between those two steps leaves the new key with NAME.crt.renew beside the
old NAME.crt; the next 'nefia mtls renew' finishes the rename before
anything else (or do it by hand: mv NAME.crt.renew NAME.crt).

Exit status: 0 renewed, 1 the gateway could not be reached or refused,
2 bad flags or unreadable certificate files.`,
		Example: `  nefia mtls renew --name claude-agent --cert-dir ~/nefia-client-certs --addr gateway.lan:19821
  nefia mtls renew --name claude-agent --revoke-previous`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return fmt.Errorf("generate a key: %w", err)
			}
			csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: f.name}}, key)
			if err != nil {
				return fmt.Errorf("build the certificate request: %w", err)
			}
			csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
			out, err := callRenew(cmd.Context(), addr, cfg, csr, revokePrevious)
			if err != nil {
				return err
			}
			certPEM, err := checkRenewed(out, key, cfg.RootCAs, f.name)
			if err != nil {
				return connectError{err}
			}
			keyDER, err := x509.MarshalECPrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode the key: %w", err)
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
			if err := writeRenewed(files, keyPEM, certPEM); err != nil {
				return fmt.Errorf("the gateway issued certificate %s, but writing it failed: %w", out.Serial, err)
			}
			if asJSON {
				return writeJSON(e.stdout, out)
			}
			fmt.Fprintf(e.stdout, "Renewed %s certificate %q: serial %s (renews %s), valid until %s\n",
				termSafe(string(out.Role)), termSafe(out.Name), termSafe(out.Serial), termSafe(out.Renews), out.NotAfter.Format(time.RFC3339))
			fmt.Fprintf(e.stdout, "cert: %s\nkey:  %s\n", termSafe(files.cert), termSafe(files.key))
			if out.PreviousRevoked {
				fmt.Fprintf(e.stdout, "previous certificate %s revoked\n", termSafe(out.Renews))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "client certificate name: renew NAME.crt/NAME.key in --cert-dir")
	fl.StringVar(&f.certDir, "cert-dir", "./nefia-client-certs", "directory holding NAME.crt, NAME.key and ca.crt")
	fl.StringVar(&f.addr, "addr", "", "gateway host:port (default: mcp.mtls.listen_addr from nefia.yaml, else 127.0.0.1:19821)")
	fl.StringVar(&f.ca, "ca", "", "CA certificate the gateway must chain to (default: ca.crt in --cert-dir)")
	fl.StringVar(&f.serverName, "server-name", "", "name to verify in the gateway's certificate (default: the host of --addr)")
	fl.BoolVar(&revokePrevious, "revoke-previous", false, "revoke the current certificate once the new one is issued")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// callRenew calls nefia.mtls.renew over one mTLS connection with mcp-go's
// client on the raw stream (newline-delimited JSON-RPC).
func callRenew(ctx context.Context, addr string, cfg *tls.Config, csr []byte, revokePrevious bool) (tools.RenewOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tools.RenewOutput{}, connectError{fmt.Errorf("connect to %s: %w", addr, err)}
	}
	conn := raw.(*tls.Conn)
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := client.NewClient(transport.NewIO(eofOnClose{conn}, conn, io.NopCloser(strings.NewReader(""))))
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		return tools.RenewOutput{}, connectError{fmt.Errorf("start the MCP session with %s: %w", addr, err)}
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	init.Params.ClientInfo = mcp.Implementation{Name: "nefia-renew", Version: server.Version}
	if _, err := c.Initialize(ctx, init); err != nil {
		return tools.RenewOutput{}, connectError{fmt.Errorf("the gateway at %s refused the connection or the session (revoked or expired certificate?): %w", addr, err)}
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = tools.NameRenew
	req.Params.Arguments = map[string]any{"csr_pem": string(csr), "revoke_previous": revokePrevious}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return tools.RenewOutput{}, connectError{fmt.Errorf("call %s: %w", tools.NameRenew, err)}
	}
	if res.IsError {
		return tools.RenewOutput{}, connectError{fmt.Errorf("the gateway refused the renewal: %s", termSafe(toolText(res)))}
	}
	data, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return tools.RenewOutput{}, fmt.Errorf("read the renewal: %w", err)
	}
	var out tools.RenewOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return tools.RenewOutput{}, connectError{fmt.Errorf("the gateway's answer is not a renewal: %w", err)}
	}
	return out, nil
}

func toolText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, " ")
}

// checkRenewed accepts the gateway's certificate only if it certifies our
// new key, carries our name and chains to the CA we trust: files are
// replaced with nothing less.
func checkRenewed(out tools.RenewOutput, key *ecdsa.PrivateKey, roots *x509.CertPool, name string) ([]byte, error) {
	certPEM := []byte(out.CertificatePEM)
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("the gateway's answer holds no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the renewed certificate does not parse: %w", err)
	}
	if !key.PublicKey.Equal(c.PublicKey) {
		return nil, errors.New("the renewed certificate does not certify the key generated for it")
	}
	if c.Subject.CommonName != name {
		return nil, fmt.Errorf("the renewed certificate is for %q, not %q", c.Subject.CommonName, name)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the renewed certificate does not verify against the CA: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), nil
}

// writeRenewed replaces the key and certificate so that every reader sees
// a matching pair or, after a crash, a recoverable state: the certificate
// is staged durably first, then the key replaced atomically, then the
// staged certificate renamed over the old one. Only a crash between the
// last two steps leaves the new key beside the old certificate, with the
// new one staged as NAME.crt.renew (finishPendingRenewal completes it).
func writeRenewed(files certFiles, keyPEM, certPEM []byte) error {
	staged := files.cert + pendingSuffix
	if err := atomicfile.WriteFile(staged, certPEM, 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(files.key, keyPEM, 0o600); err != nil {
		_ = os.Remove(staged)
		return err
	}
	if err := os.Rename(staged, files.cert); err != nil {
		return fmt.Errorf("the new key is in %s, but moving %s over %s failed (move it by hand): %w", files.key, staged, files.cert, err)
	}
	return atomicfile.SyncDir(filepath.Dir(files.cert))
}

// finishPendingRenewal completes a renewal interrupted after its key was
// written: a staged NAME.crt.renew that matches NAME.key is moved over
// NAME.crt; one that does not (the crash came before the key) is removed.
func finishPendingRenewal(files certFiles) error {
	staged := files.cert + pendingSuffix
	certPEM, err := os.ReadFile(staged)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return usage(fmt.Errorf("%s: %w", files.certFlag, err))
	}
	keyPEM, err := os.ReadFile(files.key)
	if err == nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if err := os.Rename(staged, files.cert); err != nil {
				return fmt.Errorf("finish the interrupted renewal: %w", err)
			}
			return atomicfile.SyncDir(filepath.Dir(files.cert))
		}
	}
	// Staged before the key was replaced: NAME.crt and NAME.key are still
	// the old, matching pair.
	if err := os.Remove(staged); err != nil {
		return fmt.Errorf("remove the stale %s: %w", staged, err)
	}
	return nil
}

// eofOnClose reports our own Close of the connection as the end of the
// stream, so mcp-go does not log it as a read error.
type eofOnClose struct{ net.Conn }

func (c eofOnClose) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, net.ErrClosed) {
		err = io.EOF
	}
	return n, err
}

// warnPrevious says on stderr (where it cannot break --json) that a name's
// earlier certificates are still active after it was issued again: each
// still admits whoever holds its key (issue 13 item 5).
func warnPrevious(w io.Writer, name string, serials []string) {
	if len(serials) == 0 {
		return
	}
	fmt.Fprintf(w, "nefia: warning: %d earlier certificate(s) named %q stay active until they expire: %s; "+
		"pass --revoke-previous, or revoke them with 'nefia mtls revoke --serial SERIAL'\n",
		len(serials), termSafe(name), termSafe(strings.Join(serials, ", ")))
}
