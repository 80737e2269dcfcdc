package server

import (
	"encoding/json"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// sessionState is the per-session state mcp-go reads and writes through the
// ClientSession interface and its optional extensions. It is embedded in
// [StreamSession], whose method set therefore satisfies those interfaces.
// Every method is safe for concurrent use: mcp-go calls them from request
// handlers and from broadcasts on other sessions' goroutines.
type sessionState struct {
	id string

	// notifications is the buffered channel mcp-go sends server-to-client
	// notifications into. mcp-go never blocks on it (a full channel drops the
	// notification and reports ErrNotificationChannelBlocked to OnError
	// hooks, server/session.go sendNotificationCore), so its capacity is what
	// bounds notification memory for a peer that stops reading.
	notifications chan mcp.JSONRPCNotification
	// notes counts calls of NotificationChannel, which mcp-go makes for
	// every notification it sends (server/session.go): a request whose
	// count did not move while it ran sent none, so its response may skip
	// the writer's queue (StreamSession.tryWrite).
	notes atomic.Uint64

	initialized     atomic.Bool
	logLevel        atomic.Value // mcp.LoggingLevel
	clientInfo      atomic.Value // mcp.Implementation
	clientCaps      atomic.Value // mcp.ClientCapabilities
	protocolVersion atomic.Value // string, set by the initialize handshake only

	toolsMu sync.RWMutex
	tools   map[string]mcpserver.ServerTool

	// subMu guards the subscriptions/listen state (protocol 2026-07-28).
	subMu     sync.Mutex
	subFilter mcp.SubscriptionFilter
	listenID  json.RawMessage // id of the open subscriptions/listen request, nil if none
}

// Compile-time checks that StreamSession offers what mcp-go looks for.
var (
	_ mcpserver.ClientSession                 = (*StreamSession)(nil)
	_ mcpserver.SessionWithLogging            = (*StreamSession)(nil)
	_ mcpserver.SessionWithClientInfo         = (*StreamSession)(nil)
	_ mcpserver.SessionWithProtocolVersion    = (*StreamSession)(nil)
	_ mcpserver.SessionWithTools              = (*StreamSession)(nil)
	_ mcpserver.SessionWithSubscriptionFilter = (*StreamSession)(nil)
)

// SessionID returns the session's unique id (a random UUID). It identifies the
// session to mcp-go (MCPServer.SendNotificationToSpecificClient,
// AddSessionTools), to audit records and to revocation.
func (s *sessionState) SessionID() string { return s.id }

// Initialize marks the session ready for notifications. mcp-go calls it on the
// initialize request (2025-11-25 and earlier) and on the first request that
// carries modern protocol metadata (2026-07-28).
func (s *sessionState) Initialize() {
	if s.logLevel.Load() == nil {
		s.logLevel.Store(mcp.LoggingLevelError)
	}
	s.initialized.Store(true)
}

// Initialized reports whether Initialize has been called.
func (s *sessionState) Initialized() bool { return s.initialized.Load() }

// NotificationChannel returns the channel mcp-go sends notifications into; the
// session's writer forwards them to the peer.
func (s *sessionState) NotificationChannel() chan<- mcp.JSONRPCNotification {
	s.notes.Add(1)
	return s.notifications
}

// SetLogLevel records the minimum level set by logging/setLevel (2025-11-25
// and earlier; from 2026-07-28 the level travels in each request's _meta).
func (s *sessionState) SetLogLevel(level mcp.LoggingLevel) { s.logLevel.Store(level) }

// GetLogLevel returns the minimum log level, "error" until the client sets one.
func (s *sessionState) GetLogLevel() mcp.LoggingLevel {
	if level, ok := s.logLevel.Load().(mcp.LoggingLevel); ok {
		return level
	}
	return mcp.LoggingLevelError
}

// GetClientInfo returns the client's self-declared name and version. It is
// not authenticated: the certificate identity is the caller's ContextFunc's
// business, never this.
func (s *sessionState) GetClientInfo() mcp.Implementation {
	info, _ := s.clientInfo.Load().(mcp.Implementation)
	return info
}

// SetClientInfo records the client's self-declared identity.
func (s *sessionState) SetClientInfo(info mcp.Implementation) { s.clientInfo.Store(info) }

// GetClientCapabilities returns the capabilities the client declared, in the
// initialize request or in the latest modern request's _meta.
func (s *sessionState) GetClientCapabilities() mcp.ClientCapabilities {
	caps, _ := s.clientCaps.Load().(mcp.ClientCapabilities)
	return caps
}

// SetClientCapabilities records the capabilities the client declared.
func (s *sessionState) SetClientCapabilities(caps mcp.ClientCapabilities) {
	s.clientCaps.Store(caps)
}

// ProtocolVersion returns the version negotiated by the initialize handshake,
// or "" if the client never performed one (a 2026-07-28 client declares its
// version per request; see mcpserver.RequestProtocolVersion).
func (s *sessionState) ProtocolVersion() string {
	v, _ := s.protocolVersion.Load().(string)
	return v
}

// SetProtocolVersion records the negotiated version. mcp-go calls it only from
// the initialize handshake (server/server.go handleInitialize).
func (s *sessionState) SetProtocolVersion(version string) { s.protocolVersion.Store(version) }

// GetSessionTools returns a copy of the tools added to this session only
// (MCPServer.AddSessionTools), or nil if there are none.
func (s *sessionState) GetSessionTools() map[string]mcpserver.ServerTool {
	s.toolsMu.RLock()
	defer s.toolsMu.RUnlock()
	if s.tools == nil {
		return nil
	}
	return maps.Clone(s.tools)
}

// SetSessionTools replaces the session's own tools.
func (s *sessionState) SetSessionTools(tools map[string]mcpserver.ServerTool) {
	s.toolsMu.Lock()
	defer s.toolsMu.Unlock()
	s.tools = maps.Clone(tools)
}

// SetSubscriptionFilter records the notification types a 2026-07-28 client
// opted in to with subscriptions/listen; mcp-go clears it when the listen
// request ends.
func (s *sessionState) SetSubscriptionFilter(filter mcp.SubscriptionFilter) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.subFilter = filter
}

// SubscriptionFilter reports which broadcast notifications (list_changed)
// this session may receive. A session that completed the initialize handshake
// and has no listen stream open is unfiltered, as before 2026-07-28. A
// session that never performed the handshake speaks 2026-07-28, where every
// notification is opt-in (SEP-2575): it is filtered, and receives only what
// an open subscriptions/listen asked for.
func (s *sessionState) SubscriptionFilter() (mcp.SubscriptionFilter, bool) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.listenID != nil {
		return s.subFilter, true
	}
	if s.ProtocolVersion() != "" {
		return mcp.SubscriptionFilter{}, false
	}
	return mcp.SubscriptionFilter{}, true
}

// beginListen records id as the open subscriptions/listen request. Only one
// may be open per session: mcp-go keeps a single filter per session and
// clears it when any listen ends, so a second concurrent listen would corrupt
// the first one's filter.
func (s *sessionState) beginListen(id json.RawMessage) bool {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.listenID != nil {
		return false
	}
	s.listenID = id
	return true
}

// endListen forgets the open subscriptions/listen request.
func (s *sessionState) endListen() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.listenID = nil
	s.subFilter = mcp.SubscriptionFilter{}
}

// openListenID returns the id of the open subscriptions/listen request, or nil.
func (s *sessionState) openListenID() json.RawMessage {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return s.listenID
}
