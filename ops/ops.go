// Package ops is termhub's operator side (docs/protocol.md#endpoints, docs/protocol.md#credentials, docs/ops.md): the live
// dashboard page at /ops/, the cookie login that gives a browser a session
// (kept in Redis, session.go) for the ops token, the live feed /v1/ops/ws
// and the endpoint that kicks a connection.
//
// The feed is built from two hooks: Hub.Observe (terminal status changes and
// connections coming and going, called under the hub's lock) and the
// engine's transaction observer (every committed transaction). Both only
// copy a frame into each feed's bounded queue; a feed that falls behind is
// dropped, never waited for. GET /v1/ops/terminals and /metrics stay in
// package hub.
package ops

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// Defaults of Options.
const (
	DefaultRefreshInterval = 5 * time.Second
	DefaultRecent          = 50
	DefaultFeedQueue       = 512
	DefaultWriteTimeout    = 10 * time.Second
	// DefaultSessionIdle is how long a dashboard session lives unused
	// (docs/protocol.md#credentials: 12 h idle).
	DefaultSessionIdle = 12 * time.Hour
	// DefaultSessionCheck is how often an open feed re-checks its session.
	DefaultSessionCheck = time.Minute
)

// Transactions is what ops reads from the session engine; *session.Engine
// has it.
type Transactions interface {
	List(ctx context.Context, merchantID string, f session.Filter) (session.Page, error)
	Get(ctx context.Context, merchantID, id string) (*protocol.Transaction, error)
}

// Options configure a Server. Hub and Token are required.
type Options struct {
	Hub *hub.Hub
	// Engine supplies the recent transactions of the snapshot; nil leaves
	// them out (live transactionUpdates still flow through Publish).
	Engine Transactions
	// Token is the ops token (config ops_token). Empty refuses every login.
	// It also keys the hash that names a session in Redis, so a hub with
	// another token finds none of the old sessions.
	Token  string
	Clock  clock.Clock
	Logger zerolog.Logger
	// Redis keeps the dashboard sessions, under Keys.OpsSession. Nil
	// refuses logins (503); bearer auth works without it.
	Redis redis.UniversalClient
	// Keys names the session keys (config key_prefix).
	Keys keys.Space
	// CookieSecure marks the session cookie Secure even on a plain-HTTP
	// request (config ops_cookie_secure: TLS ends at a proxy in front). A
	// request over TLS, or with X-Forwarded-Proto: https, gets it anyway.
	CookieSecure bool
	// SessionIdle is how long a session lives without being used; every
	// authenticated request and connect, and every SessionCheck of an open
	// feed, starts it again. DefaultSessionIdle when zero.
	SessionIdle time.Duration
	// SessionCheck is how often an open feed opened with a session checks
	// that it still exists (ending the feed when another hub logged it
	// out) and refreshes its idle expiry. DefaultSessionCheck when zero.
	SessionCheck time.Duration
	// Nodes lists the live nodes of the hub for the feed's snapshot and
	// heartbeats (GET /v1/ops/nodes); nil lists none.
	Nodes func(ctx context.Context) ([]nodes.Info, error)
	// Watching, if set, is told when this server gets its first feed
	// (true) and loses its last (false): with several nodes, the others
	// then send their transaction updates here too (PublishRemote). It is
	// called with the server's lock held and must not block.
	Watching func(bool)
	// RequestTimeout bounds each Redis command of a session (config
	// request_timeout); redisx.DefaultRequestTimeout when zero.
	RequestTimeout time.Duration
	// RefreshInterval is how often every feed gets a heartbeats message with
	// the terminals' lastHeartbeat and the connections' lastSeen.
	RefreshInterval time.Duration
	// Recent is how many transactions the snapshot carries, newest first.
	Recent int
	// FeedQueue is how many frames a feed may have waiting before it counts
	// as too slow and is dropped.
	FeedQueue int
	// WriteTimeout bounds one write to a feed.
	WriteTimeout time.Duration
}

func (o *Options) fill() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.Recent <= 0 {
		o.Recent = DefaultRecent
	}
	if o.FeedQueue <= 0 {
		o.FeedQueue = DefaultFeedQueue
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.SessionIdle <= 0 {
		o.SessionIdle = DefaultSessionIdle
	}
	if o.SessionCheck <= 0 {
		o.SessionCheck = DefaultSessionCheck
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = redisx.DefaultRequestTimeout
	}
}

// Server serves the ops endpoints. Create it with New, add its routes with
// Register and give PublishTransaction to the engine.
type Server struct {
	opts Options
	hub  *hub.Hub
	log  zerolog.Logger
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	tokenSum [sha256.Size]byte // of the ops token

	mu        sync.Mutex
	feeds     map[*feed]struct{}              // guarded by mu
	ticker    clock.Timer                     // guarded by mu; armed while there are feeds
	tickGen   uint64                          // guarded by mu; identifies the armed ticker
	closed    bool                            // guarded by mu
	observers []func(t *protocol.Transaction) // guarded by mu

	// The terminal status changes waiting for Redis (history.go).
	histMu      sync.Mutex
	histQueue   []statusWrite  // guarded by histMu
	histRunning bool           // guarded by histMu: a writer goroutine runs
	histStopped bool           // guarded by histMu: StopHistory was called
	histWG      sync.WaitGroup // the writer goroutine
	histDropped int            // guarded by histMu: changes dropped on a full queue
	histAbandon atomic.Bool    // StopHistory gave up waiting: the writer stops
	// histLast is each device's last change queued; guarded by histMu.
	histLast map[string]statusKey
}

// New builds a Server and subscribes it to the hub's status and connection
// updates.
func New(opts Options) *Server {
	opts.fill()
	s := &Server{
		opts: opts, hub: opts.Hub, log: opts.Logger.With().Str("component", "ops").Logger(),
		done: make(chan struct{}), feeds: map[*feed]struct{}{},
		tokenSum: sha256.Sum256([]byte(opts.Token)),
	}
	opts.Hub.Observe(hubObserver{s})
	if opts.Redis != nil {
		opts.Hub.OnStatusChange(s.recordStatus)
	}
	return s
}

// Register adds the ops routes to mux, the node's one mux (App.Routes).
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", redirectRoot)
	mux.Handle("GET /ops/", s.staticHandler())
	mux.HandleFunc("GET /ops/session", s.handleSession)
	mux.HandleFunc("POST /ops/login", s.handleLogin)
	mux.HandleFunc("POST /ops/logout", s.handleLogout)
	mux.HandleFunc("GET /v1/ops/ws", s.handleFeed)
	mux.HandleFunc("POST /v1/ops/connections/{connectionId}/disconnect", s.handleDisconnect)
	mux.HandleFunc("GET /v1/ops/transactions", s.handleTransactions)
	mux.HandleFunc("GET /v1/ops/terminals/{terminalId}/events", s.handleTerminalEvents)
}

// redirectRoot sends GET / (and HEAD /, which the mux routes with GET) to the
// dashboard: the hub has no page of its own at the root, and someone opening
// the hub's address in a browser is looking for the dashboard. Only the exact
// path: any other unknown path stays a 404. 302, not 301/308, so a browser
// does not cache it should the root ever get a page of its own.
func redirectRoot(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ops/", http.StatusFound)
}

// PublishTransaction sends a committed transaction to every feed and to the
// observers added with ObserveTransactions. It is the engine's observer
// (Engine.SetObserver has a single slot, so ops owns it and fans out). It
// never blocks.
func (s *Server) PublishTransaction(t *protocol.Transaction) {
	if t == nil {
		return
	}
	s.mu.Lock()
	obs := s.observers
	if len(s.feeds) > 0 {
		// Queued as it is, in commit order, and encoded by the feeds: this
		// runs before the terminal hears of the commit.
		it := item{txn: &txnFrame{t: t}}
		for f := range s.feeds {
			f.push(it)
		}
	}
	s.mu.Unlock()
	for _, o := range obs {
		o(t)
	}
}

// PublishRemote queues a transaction another node committed for every
// feed of this server (not for the observers: they hear of this node's
// commits only).
func (s *Server) PublishRemote(t *protocol.Transaction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := item{txn: &txnFrame{t: t}}
	for f := range s.feeds {
		f.push(it)
	}
}

// Watched reports whether a feed is open on this server.
func (s *Server) Watched() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.feeds) > 0
}

// ObserveTransactions adds f to the receivers of every committed
// transaction, for packages that would otherwise need the engine's single
// observer slot. f is called from the committing goroutine and must not
// block.
func (s *Server) ObserveTransactions(f func(t *protocol.Transaction)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observers = append(s.observers[:len(s.observers):len(s.observers)], f)
}

// Close ends every feed (close 4004, server_shutdown; the dashboard
// reconnects) and waits for their goroutines or ctx.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		if s.ticker != nil {
			s.ticker.Stop()
			s.ticker = nil
		}
	}
	s.mu.Unlock()
	return waitWithin(ctx, &s.wg)
}

// waitWithin waits for wg, or until ctx ends (its error then).
func waitWithin(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tokenMatches compares a presented token with the ops token in constant
// time (hashing first, so that not even the length leaks).
func (s *Server) tokenMatches(got string) bool {
	if s.opts.Token == "" || got == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// handleDisconnect kicks a live POS or terminal connection with
// forceDisconnect admin_action and close 4003; the client may reconnect.
func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request) {
	if _, e := s.authenticate(r, "missing or wrong ops token"); e != nil {
		writeError(w, e)
		return
	}
	if !sameOrigin(r) {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "Origin", "cross-origin request refused"))
		return
	}
	id := r.PathValue("connectionId")
	ok := s.hub.Disconnect(id, &protocol.Disconnect{
		Code: protocol.CloseAdmin, Reason: protocol.ReasonAdmin,
		Message: "Disconnected by an operator", ReconnectAllowed: true,
	})
	if !ok {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "connectionId", "no live connection %q", id))
		return
	}
	s.log.Info().Str("connectionId", id).Str("remote", s.hub.ClientAddr(r)).Msg("connection disconnected by an operator")
	w.WriteHeader(http.StatusNoContent)
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes the contract's error body, with Retry-After on a 503.
func writeError(w http.ResponseWriter, e *protocol.Error) {
	if (e.Code == protocol.CodeUnavailable || e.Code == protocol.CodeRateLimited) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.Itoa(max(e.RetryAfter, 1)))
	}
	writeJSON(w, e.Code.HTTPStatus(), protocol.ErrorBody{Error: e})
}
