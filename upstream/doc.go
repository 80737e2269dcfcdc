// Package upstream puts other MCP servers behind the gateway (issue 12).
//
// A Manager runs each entry of mcp.upstreams: a command is started as a
// child process speaking MCP over stdio (nefia owns the process so that it
// sees it exit and logs its stderr; never to stdout), a url is reached
// with mcp-go's Streamable HTTP client (TLS 1.3, optional client
// certificate, static headers from headers_file), which starts the session
// and holds its stream of notifications, while the forwarded calls are
// POSTed by nefia's own httpCaller on the same session. After initialize the
// Manager lists the upstream's tools and registers one proxy per tool on
// the gateway's MCP server, named <upstream>.<tool>, with the tool's
// description, input and output schemas, annotations and _meta passed
// through as sent. Because the proxies are ordinary tools of that server,
// the gateway's policy filters tools/list and refuses calls for them
// exactly as for nefia's own tools, and every call is audited. Each proxy's
// _meta also carries io.nefia/upstream (observe.MetaUpstream) = the
// upstream's name, set by nefia over anything the upstream sent under that
// key: the gateway's call hooks read it to put the upstream's name in the
// tool_call audit record (field upstream), allowed, failed and denied
// calls alike.
//
// A call to a proxy is forwarded to the upstream under the original name
// on one shared session per upstream, with a fresh params._meta carrying
// only nefia's keys: io.nefia/agent (name, serial, role, fingerprint of
// the caller's verified certificate) and io.nefia/assertion, an ES256 JWT
// signed with the key in the state directory (upstream_assertion.key; the
// public half is upstream_assertion.pub and `nefia upstream key`), for
// audience = the upstream's name, valid 60 seconds; one caller's calls reuse
// its assertion while more than AssertionMinRemaining (30 s) of it remains
// (Signer.Assertion), so upstreams must not treat it as single-use. HTTP
// upstreams also get the Nefia-Agent-* and Nefia-Assertion headers. The
// call's arguments are passed on as the caller sent them, and the
// result's content items as the upstream sent them. An upstream authorizes
// on the assertion (Verify shows how), not on _meta or headers alone,
// unless it trusts the path from nefia.
//
// Failures stay local to one upstream: a call not answered within
// call_timeout is a tool error saying the upstream timed out; an upstream
// that is down answers with a tool error saying so; isError results and
// JSON-RPC errors of the upstream are passed on. A stdio upstream that
// exits is restarted after MinBackoff, doubling to MaxBackoff, and its
// tools are listed again; notifications/tools/list_changed from an
// upstream re-lists its tools and replaces its proxies, which makes the
// gateway notify connected clients.
//
// Resources, resource templates and prompts pass through too (items.go):
// prompts as <upstream>.<prompt>, resources under the upstream's own URIs,
// routed by an index; the gateway decides them as
// <upstream>.prompt:<name> and <upstream>.resource:<uri> (package policy).
// With session: per_client each client session gets an upstream session
// of its own (conn.go), closed when identity.SessionDone fires. An HTTP
// upstream's answers are bounded like stdio lines: MaxMessageBytes per
// body or SSE event (limit_http.go).
package upstream
