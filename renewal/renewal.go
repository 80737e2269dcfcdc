package renewal

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
	"net"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/tools"
)

// Timeout bounds one exchange with the gateway: dial, handshake,
// initialize and the renew call.
const Timeout = 30 * time.Second

// Errors Renew wraps, so that callers can tell who has to act.
var (
	// ErrGateway means the gateway could not be reached, refused the
	// connection or the renewal, or answered with something that is not a
	// certificate for the new key: nothing was written.
	ErrGateway = errors.New("renewal: the gateway did not renew the certificate")
	// ErrWrite means the gateway issued the certificate but the files could
	// not be replaced; the error names the new serial.
	ErrWrite = errors.New("renewal: writing the renewed certificate failed")
)

// Request is one renewal.
type Request struct {
	// Addr is the gateway, host:port.
	Addr string
	// TLS presents the certificate being renewed and trusts the gateway's
	// CA (RootCAs), which the new certificate must chain to as well.
	TLS *tls.Config
	// Name is the certificate's name; the new one must carry it.
	Name string
	// Files are replaced with the new pair; the zero value writes nothing.
	Files Files
	// RevokePrevious asks the gateway to revoke the renewed certificate.
	RevokePrevious bool
	// Current, when its Leaf is set and Files are, is the certificate
	// being renewed: a newer pair already in Files (another process using
	// the same directory renewed it) is adopted instead of renewing again.
	Current tls.Certificate
}

// Result is a completed renewal.
type Result struct {
	// Output is the gateway's answer.
	Output tools.RenewOutput
	// KeyPair is the new key with its certificate, Leaf set.
	KeyPair tls.Certificate
	// Adopted: KeyPair is the newer pair found in Files (see
	// Request.Current); the gateway was not asked and Output is empty.
	Adopted bool
}

// Renew makes a new key, has the gateway at req.Addr sign it and, when
// req.Files is set, replaces the files, holding the files' lock
// (Files.Lock) from the check for a newer pair (req.Current) to the write.
// Errors wrap ErrGateway (nothing changed) or ErrWrite (a certificate was
// issued but not stored).
func Renew(ctx context.Context, req Request) (Result, error) {
	if req.Files != (Files{}) {
		unlock, err := req.Files.Lock()
		if err != nil {
			return Result{}, err
		}
		defer unlock()
		if req.Current.Leaf != nil {
			if kp, ok := req.Files.Newer(req.Current, req.TLS.RootCAs, time.Now()); ok {
				return Result{KeyPair: kp, Adopted: true}, nil
			}
		}
	}
	key, csr, err := NewCSR(req.Name)
	if err != nil {
		return Result{}, err
	}
	out, err := Call(ctx, req.Addr, req.TLS, csr, req.RevokePrevious)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrGateway, err)
	}
	certPEM, err := Check(out, key, req.TLS.RootCAs, req.Name)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrGateway, err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return Result{}, err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrGateway, err)
	}
	if req.Files != (Files{}) {
		if err := req.Files.Write(keyPEM, certPEM); err != nil {
			return Result{Output: out, KeyPair: kp}, fmt.Errorf("%w: the gateway issued certificate %s: %w", ErrWrite, out.Serial, err)
		}
	}
	return Result{Output: out, KeyPair: kp}, nil
}

// NewCSR makes a new ECDSA P-256 key, the only kind a renewal takes, and a
// PEM certificate request over it. The gateway uses only its public key.
func NewCSR(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("renewal: generate a key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("renewal: build the certificate request: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// EncodeKey is the PEM form of key written to NAME.key.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("renewal: encode the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// Call calls nefia.mtls.renew over one mTLS connection with mcp-go's
// client on the raw stream (newline-delimited JSON-RPC).
func Call(ctx context.Context, addr string, cfg *tls.Config, csr []byte, revokePrevious bool) (tools.RenewOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tools.RenewOutput{}, fmt.Errorf("connect to %s: %w", addr, err)
	}
	conn := raw.(*tls.Conn)
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := client.NewClient(transport.NewIO(eofOnClose{conn}, conn, io.NopCloser(strings.NewReader(""))))
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		return tools.RenewOutput{}, fmt.Errorf("start the MCP session with %s: %w", addr, err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.ProtocolVersion20251125
	init.Params.ClientInfo = mcp.Implementation{Name: "nefia-renew", Version: server.Version}
	if _, err := c.Initialize(ctx, init); err != nil {
		return tools.RenewOutput{}, fmt.Errorf("the gateway at %s refused the connection or the session (revoked or expired certificate?): %w", addr, err)
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = tools.NameRenew
	req.Params.Arguments = map[string]any{"csr_pem": string(csr), "revoke_previous": revokePrevious}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return tools.RenewOutput{}, fmt.Errorf("call %s: %w", tools.NameRenew, err)
	}
	if res.IsError {
		return tools.RenewOutput{}, fmt.Errorf("the gateway refused the renewal: %s", toolText(res))
	}
	data, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return tools.RenewOutput{}, fmt.Errorf("read the renewal: %w", err)
	}
	var out tools.RenewOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return tools.RenewOutput{}, fmt.Errorf("the gateway's answer is not a renewal: %w", err)
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

// Check accepts the gateway's certificate only if it certifies key, carries
// name and chains to roots for client authentication: files are replaced
// with nothing less. It returns the certificate as PEM.
func Check(out tools.RenewOutput, key *ecdsa.PrivateKey, roots *x509.CertPool, name string) ([]byte, error) {
	b, _ := pem.Decode([]byte(out.CertificatePEM))
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
