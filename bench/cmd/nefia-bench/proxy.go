package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

// serveProxy runs the floor of any Go gateway in front of an HTTP
// upstream (issue 12 item 2): net/http's reverse proxy, mutual TLS in
// front (nefia's certificate check, baseline.Config), HTTPS to --to behind,
// and nothing else: no MCP parsing, no policy, no audit, no identity. It
// speaks each side's protocol as nefia does: HTTP/2 (or HTTP/1.1, by ALPN)
// to its clients, HTTP/1.1 with keep-alive to the upstream (nefia's
// dialHTTP, issue 12 item 1), so that the floor stays comparable. What it
// adds to the direct call is the second HTTP round trip itself, which no
// gateway written with net/http avoids.
func serveProxy(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serve-proxy", flag.ContinueOnError)
	tf := addServerFlags(fs)
	to := fs.String("to", "", "the upstream's URL (https://host:port/mcp)")
	upCA := fs.String("upstream-ca", "", "CA of the upstream's server certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*to)
	if err != nil || target.Scheme != "https" {
		return fmt.Errorf("--to: want an https URL, not %q", *to)
	}
	pem, err := os.ReadFile(*upCA)
	if err != nil {
		return fmt.Errorf("--upstream-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--upstream-ca %s: no certificates", *upCA)
	}
	cfg, err := echoTLS(*tf.cert, *tf.key, *tf.ca)
	if err != nil {
		return err
	}
	ht := http.DefaultTransport.(*http.Transport).Clone()
	ht.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	// HTTP/1.1 to the upstream, as nefia speaks to its url upstreams.
	ht.Protocols = new(http.Protocols)
	ht.Protocols.SetHTTP1(true)
	ht.MaxIdleConnsPerHost = 64
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.URL.Path = target.Path },
		Transport:     ht,
		FlushInterval: -1, // SSE answers go on at once
	}
	ln, err := listen(*tf.addr, stdout)
	if err != nil {
		return err
	}
	return serveMCPPath(ctx, ln, cfg, rp)
}
