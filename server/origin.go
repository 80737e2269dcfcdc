package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ReasonOrigin is why a request whose Origin header is neither the
// gateway's own origin nor allowed (HTTPOptions.AllowedOrigins) is refused.
const ReasonOrigin = "origin not allowed"

// originPolicy decides which Origin headers the HTTP transport accepts. The
// MCP specification (Streamable HTTP, security warning) says servers MUST
// validate Origin and answer 403 to an invalid one: a web page in a browser
// holding a client certificate could otherwise drive the gateway with that
// certificate.
//
// The rule, for every request to /mcp:
//   - no Origin header: accepted. Browsers send one on every cross-origin
//     request; clients that send none (SDKs, curl, the bridge) are not
//     browsers, and the client certificate already says who they are;
//   - the gateway's own origin: https (it serves nothing else) and the
//     host and port the request was sent to (its Host header, which a
//     browser sets from the URL it fetches), default port 443;
//   - an origin listed in HTTPOptions.AllowedOrigins (mcp.mtls.allowed_origins),
//     compared as scheme, host and port, case-insensitively, default ports
//     made explicit;
//   - anything else is refused: another host or port, http:// for the
//     gateway's own host (no page is served there), "null" (sandboxed
//     frames, file: pages, some redirects: no origin to trust), a value that
//     is not an origin, and more than one Origin header.
//
// Accepting an origin sends no CORS headers: a page still cannot read the
// answers unless the browser lets it. The list is for clients that send an
// Origin without enforcing CORS (editor webviews, desktop shells).
type originPolicy struct {
	allowed map[string]bool // normalized origins
}

// newOriginPolicy checks and normalizes the allow list.
func newOriginPolicy(allowed []string) (originPolicy, error) {
	p := originPolicy{allowed: make(map[string]bool, len(allowed))}
	for _, o := range allowed {
		n, err := normalizeOrigin(o)
		if err != nil {
			return originPolicy{}, fmt.Errorf("server: allowed origins (mcp.mtls.allowed_origins): %w", err)
		}
		p.allowed[n] = true
	}
	return p, nil
}

// check returns nil when r may be served, else why not.
func (p originPolicy) check(r *http.Request) error {
	values := r.Header.Values("Origin")
	switch len(values) {
	case 0:
		return nil
	case 1:
	default:
		return fmt.Errorf("%d Origin headers", len(values))
	}
	origin, err := normalizeOrigin(values[0])
	if err != nil {
		return err
	}
	if p.allowed[origin] {
		return nil
	}
	if own, err := normalizeOrigin("https://" + r.Host); err == nil && own == origin {
		return nil
	}
	return fmt.Errorf("origin %q is neither this gateway's (https://%s) nor allowed", values[0], r.Host)
}

var errNotOrigin = errors.New("not an origin")

// normalizeOrigin returns an http or https origin as scheme://host:port in
// lower case, the default port written out, or an error for anything else
// ("null", a path, credentials, another scheme).
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("%w: %q", errNotOrigin, s)
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	switch {
	case scheme != "http" && scheme != "https":
		return "", fmt.Errorf("%w: %q: scheme must be http or https", errNotOrigin, s)
	case port == "" && scheme == "https":
		port = "443"
	case port == "":
		port = "80"
	}
	host := strings.ToLower(u.Hostname())
	if host == "" || strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("%w: %q", errNotOrigin, s)
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}
