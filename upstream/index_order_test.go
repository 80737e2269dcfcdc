package upstream

import (
	"io"
	"log/slog"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/observe"
)

// TestSharedURIBelongsToEarlierUpstream: a resource URI two upstreams list
// belongs to the first in mcp.upstreams order, whichever listed it first:
// an earlier upstream listing it later (it started later, or its list
// changed) takes it back, and gives it up when it stops offering it; a
// template of an earlier upstream takes the URIs it matches from a later
// upstream's static resources (issue 12, attack item 6: ownership went to
// whichever listed first, for good).
func TestSharedURIBelongsToEarlierUpstream(t *testing.T) {
	t.Parallel()
	srv := mcpserver.NewMCPServer("t", "1", mcpserver.WithResourceCapabilities(false, true))
	x := newIndex()
	x.srv = srv
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mk := func(name string) *upstream {
		return &upstream{cfg: config.Upstream{Name: name}, log: log, srv: srv, idx: x}
	}
	first, second := mk("first"), mk("second")
	x.setUpstreams([]*upstream{first, second})
	res := func(uri string) []mcp.Resource { return []mcp.Resource{mcp.NewResource(uri, "r")} }
	owner := func(uri string) string {
		r, ok := srv.ListResources()[uri]
		if !ok {
			return ""
		}
		return r.Resource.Meta.AdditionalFields[observe.MetaUpstream].(string)
	}
	const uri = "test://shared/static"
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{"the later upstream lists first", func() { second.setResources(res(uri)) }, "second"},
		{"the earlier one takes it back", func() { first.setResources(res(uri)) }, "first"},
		{"the later one re-lists (list_changed)", func() { second.setResources(res(uri)) }, "first"},
		{"the earlier one stops offering it", func() { first.setResources(nil) }, "second"},
		{"the earlier one's template matches it", func() {
			first.setTemplates([]mcp.ResourceTemplate{mcp.NewResourceTemplate("test://shared/{name}", "t")})
		}, ""},
		{"the template goes away", func() { first.setTemplates(nil) }, "second"},
		{"nobody offers it", func() { second.setResources(nil) }, ""},
	}
	for _, s := range steps {
		s.do()
		if got := owner(uri); got != s.want {
			t.Errorf("%s: %s is served by %q, want %q", s.name, uri, got, s.want)
		}
	}
}
