// Package httpapi is termhub's HTTP API: the signed REST endpoints of
// docs/protocol.md#endpoints, docs/protocol.md#transactions (terminals, payments, transactions and their
// lifecycle), HTTP event sessions with their long poll and acks
// (docs/protocol.md#messageid-ack-and-replay), the ops-token endpoints GET /v1/ops/terminals and /metrics, and
// /healthz and /readyz. It holds no connections and no rules of its own:
// what it answers comes from the hub (package hub) and the engine.
//
// The cut between the two packages: signed-request authentication, with
// the rate limits, failure counting and replay guard around it, stays in
// package hub (Hub.AuthenticatePOS, Hub.FirstUse, Hub.OpsHTTP), because
// the WebSocket upgrade needs the same checks, counted against the same
// buckets, as every request here; so do the bridge to the engine
// (Hub.Perform, Hub.ClientError) and the error body (hub.WriteError). What
// only HTTP needs, reading bodies, scopes per route, the routes and their
// handlers, event sessions and the per-route latency metric, is here.
package httpapi

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// Options configure a Server.
type Options struct {
	// Hub authenticates requests, runs them against the engine and knows
	// the terminals and connections.
	Hub *hub.Hub
	// Engine lists transactions; nil answers GET /v1/transactions 503.
	Engine Engine
	// Outbox is read and acknowledged by event sessions; nil disables them.
	Outbox *queue.Outbox
	// Sessions keeps HTTP event sessions; nil disables them.
	Sessions Sessions
	// Health is what /readyz reports of Redis; nil: nothing.
	Health Health
	// Clock times long polls; the real clock when nil.
	Clock  clock.Clock
	Logger zerolog.Logger
	// RequestTimeout bounds every request's wait for Redis (docs/ops.md#when-redis-stalls-restarts-or-fails-over
	// request_timeout); 5 s when zero.
	RequestTimeout time.Duration
}

// Engine is what the HTTP API needs of the transaction engine beyond what
// the hub performs: the list of a merchant's transactions.
type Engine interface {
	List(ctx context.Context, merchantID string, f session.Filter) (session.Page, error)
}

// Health is what /readyz needs to know of Redis (redisx.Health).
type Health interface {
	Status() redisx.HealthStatus
}

// Server serves the HTTP API.
type Server struct {
	opts Options
	hub  *hub.Hub
	log  zerolog.Logger
}

// New builds a Server.
func New(opts Options) *Server {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = redisx.DefaultRequestTimeout
	}
	return &Server{opts: opts, hub: opts.Hub, log: opts.Logger}
}

// Register adds the API's routes to mux, the node's one mux (App.Routes).
func (s *Server) Register(mux *http.ServeMux) {
	read := func(p hub.Principal) *protocol.Error { return p.RequireRead() }
	write := func(p hub.Principal) *protocol.Error { return p.RequireWrite() }
	mux.HandleFunc("GET /v1/terminals", s.posHTTP(scoped(read, s.handleListTerminals)))
	mux.HandleFunc("GET /v1/terminals/{id}", s.posHTTP(scoped(read, s.handleGetTerminal)))
	mux.HandleFunc("POST /v1/payments", s.posHTTP(scoped(write, s.handleCreatePayment)))
	mux.HandleFunc("GET /v1/transactions", s.posHTTP(scoped(read, s.handleListTransactions)))
	mux.HandleFunc("GET /v1/transactions/{id}", s.posHTTP(scoped(read, s.handleGetTransaction)))
	mux.HandleFunc("POST /v1/transactions/{id}/{action}", s.posHTTP(scoped(write, s.handleLifecycle)))
	mux.HandleFunc("POST /v1/sessions", s.posHTTP(s.handleOpenSession))
	mux.HandleFunc("GET /v1/events", s.posHTTP(s.handleEvents))
	mux.HandleFunc("POST /v1/events/ack", s.posHTTP(s.handleEventsAck))
	mux.HandleFunc("GET /v1/ops/terminals", s.hub.OpsHTTP(s.handleOpsTerminals))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		hub.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.hub.OpsHTTP(promhttp.HandlerFor(s.hub.Metrics().Registry, promhttp.HandlerOpts{}).ServeHTTP))
}

// Timed records the latency of every plain HTTP request next serves by
// route pattern, in the hub's metrics (WebSocket upgrades are long-lived
// and measured per message instead). Package app wraps the node's whole
// mux in it, so every package's routes are measured alike.
func (s *Server) Timed(next http.Handler) http.Handler {
	m := s.hub.Metrics()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.HTTPDuration.WithLabelValues(route, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxBody bounds an HTTP request body; it is read whole to check its hash.
const maxBody = 1 << 20

// readBody reads a request body of at most maxBody bytes.
func readBody(r *http.Request) ([]byte, *protocol.Error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, protocol.Invalid("", "could not read the request body")
	}
	if len(b) > maxBody {
		return nil, protocol.Invalid("", "request body exceeds 1 MiB")
	}
	return b, nil
}

// idempotentRoutes are the POSTs whose Idempotency-Key the hub honours
// (the stored answer comes back for a repeat). Elsewhere the header means
// nothing and a repeat is refused whatever it carries (Hub.FirstUse).
var idempotentRoutes = map[string]bool{
	"POST /v1/payments":                   true,
	"POST /v1/transactions/{id}/{action}": true,
}

// posHandler is a POS REST handler, given who signed the request and its
// body.
type posHandler func(w http.ResponseWriter, r *http.Request, p hub.Principal, body []byte)

// posHTTP wraps a POS REST handler with body reading and authentication.
func (s *Server) posHTTP(next posHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := s.hub.AddrBlocked(r); e != nil {
			hub.WriteError(w, e)
			return
		}
		body, e := readBody(r)
		if e != nil {
			hub.WriteError(w, e)
			return
		}
		p, e := s.hub.AuthenticatePOS(r, body)
		if e != nil {
			hub.WriteError(w, e)
			return
		}
		// Every request is answered within request_timeout
		// (docs/ops.md#when-redis-stalls-restarts-or-fails-over); a long poll's own wait comes on top (handleEvents).
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout+requestExtra(r))
		defer cancel()
		if e := s.hub.FirstUse(ctx, r, p, idempotentRoutes[r.Pattern]); e != nil {
			hub.WriteError(w, e)
			return
		}
		next(w, r.WithContext(ctx), p, body)
	}
}

// scoped refuses, with 403 insufficient_scopes, a request whose key lacks
// the scope need checks for.
func scoped(need func(hub.Principal) *protocol.Error, next posHandler) posHandler {
	return func(w http.ResponseWriter, r *http.Request, p hub.Principal, body []byte) {
		if e := need(p); e != nil {
			hub.WriteError(w, e)
			return
		}
		next(w, r, p, body)
	}
}

// readiness is the body of /readyz.
type readiness struct {
	Status string       `json:"status"` // ready, draining or redis unreachable
	Redis  *redisReport `json:"redis,omitempty"`
}

// redisReport is what /readyz tells of Redis. It comes from the hub's
// probe (redisx.Health), never from a command of the request's own, so
// that /readyz answers at once during an outage.
type redisReport struct {
	Up    bool      `json:"up"`
	Since time.Time `json:"since"`           // of the last change between up and down
	Error string    `json:"error,omitempty"` // why the last probe failed, while down
	// DataLostAt is when this hub last found Redis without the data it had
	// (restarted without persistence): see docs/ops.md.
	DataLostAt *time.Time `json:"dataLostAt,omitempty"`
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	body := readiness{Status: "ready"}
	if hl := s.opts.Health; hl != nil {
		st := hl.Status()
		body.Redis = &redisReport{Up: st.Up, Since: st.Since.UTC(), Error: st.Error}
		if !st.DataLostAt.IsZero() {
			at := st.DataLostAt.UTC()
			body.Redis.DataLostAt = &at
		}
		if !st.Up {
			body.Status = "redis unreachable"
		}
	}
	if s.hub.Draining() {
		body.Status = "draining"
	}
	code := http.StatusOK
	if body.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	hub.WriteJSON(w, code, body)
}
