// Package hub owns termhub's live connections: it accepts and authenticates
// POS and terminal WebSockets, runs one reader per connection and a writer
// while it has something to send, pings them, keeps one connection per API
// key and per device, resolves terminal ids, tracks terminal status with its
// grace timer and routes messages to the right connection. How a transaction
// decides is the session package's business; the hub only carries out what
// it is told.
//
// It also holds what the upgrade and the HTTP API (package httpapi) must
// check alike: signed-request and ops-token authentication, the rate limits
// and failure counting around them, the replay guard of signed POSTs, and
// the bridge from a decoded request to the engine (Perform, ClientError).
// The socket layer under coder/websocket is package internal/wsconn.
package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/metrics"
	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// Options configure a Hub. Zero values are replaced by the defaults of
// docs/configuration.md.
type Options struct {
	Directory         *config.Directory
	Clock             clock.Clock
	Logger            zerolog.Logger
	HeartbeatInterval time.Duration // WebSocket pings; two missed close the connection
	GracePeriod       time.Duration // how long a dropped terminal stays "reconnecting"
	OpsToken          string        // bearer token of the ops API
	SendQueue         int           // frames queued per POS connection before it counts as slow
	TerminalQueue     int           // the same for a terminal, which gets few messages at a time
	WriteTimeout      time.Duration // deadline of one WebSocket write
	// Engine runs transactions; nil serves connections only.
	Engine Engine
	// Outbox replays and acknowledges durable POS messages; nil disables replay.
	Outbox *queue.Outbox
	// Sessions are the HTTP event sessions a WebSocket ends when it takes
	// their key over; nil: none.
	Sessions Sessions
	// Metrics is where the hub records; a fresh one when nil.
	Metrics *metrics.Metrics
	// Health tells whether Redis answers (when to try again after a
	// failure); nil: always.
	Health Health
	// RequestTimeout bounds every request's wait for Redis (docs/ops.md#when-redis-stalls-restarts-or-fails-over
	// request_timeout); 5 s when zero.
	RequestTimeout time.Duration
	// RateLimit are the limits of docs/protocol.md#credentials; config.Defaults' when
	// zero.
	RateLimit config.RateLimit
	// Replays remembers accepted signed POSTs so that a repeat is refused
	// (duplicate_request); nil does not check.
	Replays Replays
	// Node makes this hub one node of several on one Redis (peers.go);
	// nil: alone.
	Node *nodes.Node
}

// Health is what the hub needs to know of its Redis (redisx.Health).
type Health interface {
	// Ready returns a channel closed while Redis answers.
	Ready() <-chan struct{}
}

func (o *Options) fill() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Directory == nil {
		o.Directory = config.NewDirectory(config.Config{})
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 15 * time.Second
	}
	if o.GracePeriod <= 0 {
		o.GracePeriod = 60 * time.Second
	}
	if o.SendQueue <= 0 {
		o.SendQueue = 256
	}
	if o.TerminalQueue <= 0 {
		o.TerminalQueue = 16
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = redisx.DefaultRequestTimeout
	}
	if o.RateLimit.KeyRate <= 0 {
		trusted := o.RateLimit.TrustedProxies
		o.RateLimit = config.Defaults().RateLimit
		o.RateLimit.TrustedProxies = trusted
	}
}

// Hub is the registry of live connections.
type Hub struct {
	opts    Options
	clock   clock.Clock
	log     zerolog.Logger
	dir     atomic.Pointer[config.Directory]
	baseCtx context.Context
	stop    context.CancelFunc
	conns   sync.WaitGroup // one per live WebSocket connection, until its reader and writer are done
	acks    ackLines       // WebSocket acks not yet applied, per API key (acks.go)

	draining atomic.Bool
	metrics  *metrics.Metrics
	limits   *limits
	devLocks [1024]sync.Mutex // serialise a device's connect and drop handling

	mu         sync.Mutex
	pos        map[string]*conn              // by API key id; guarded by mu
	posByMerch map[string]map[*conn]struct{} // guarded by mu
	terminals  map[string]*conn              // by device id; guarded by mu
	byID       map[string]*conn              // every connection by connection id; guarded by mu
	status     map[string]*terminalState     // by device id; guarded by mu
	flaps      map[string][]time.Time        // API key id → recent displacement times; guarded by mu
	conflicts  map[string]*KeyConflict       // API key id → fighting-keys record; guarded by mu
	waiters    map[string]chan struct{}      // API key → long polls to wake; guarded by mu
	observers  []Observer                    // ops feed; guarded by mu
	// statusHooks hear of each status change where it is made, once per
	// change however many nodes there are (OnStatusChange); guarded by mu.
	statusHooks []func(merchantID string, u protocol.TerminalStatusUpdate)

	node      *nodes.Node              // nil: alone
	remote    map[string]ConnInfo      // other nodes' connections by id (peers.go); guarded by mu
	keyOwners map[string]string        // API key → node holding its connection elsewhere; guarded by mu
	early     map[string]earlyDisplace // displacements of connections not registered yet (peers.go); guarded by mu
	// peerHandlers and tickers are others' business on the bus (OnPeer,
	// OnTick); guarded by mu.
	peerHandlers map[string]func(nodes.Message)
	tickers      []func()
	// aloneTicks counts the heartbeats in a row at which this node was
	// the only one alive (Tick).
	aloneTicks atomic.Int64
}

// New builds a Hub.
func New(opts Options) *Hub {
	opts.fill()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		opts: opts, clock: opts.Clock, log: opts.Logger,
		baseCtx: ctx, stop: cancel,
		pos: map[string]*conn{}, posByMerch: map[string]map[*conn]struct{}{},
		terminals: map[string]*conn{}, byID: map[string]*conn{},
		status: map[string]*terminalState{}, flaps: map[string][]time.Time{},
		conflicts: map[string]*KeyConflict{}, waiters: map[string]chan struct{}{},
		node: opts.Node, remote: map[string]ConnInfo{}, keyOwners: map[string]string{}, early: map[string]earlyDisplace{},
		peerHandlers: map[string]func(nodes.Message){},
	}
	h.dir.Store(opts.Directory)
	h.metrics = opts.Metrics
	h.limits = newLimits(opts.RateLimit)
	h.metrics.GaugeFunc("termhub_grace_timers", "Terminals inside their reconnect grace period.", func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, st := range h.status {
			if st.status == protocol.TerminalReconnecting {
				n++
			}
		}
		return float64(n)
	})
	return h
}

// Metrics returns where the hub records.
func (h *Hub) Metrics() *metrics.Metrics { return h.metrics }

// Directory returns the merchants, keys and terminals in force.
func (h *Hub) Directory() *config.Directory { return h.dir.Load() }

// now is the hub clock in UTC, so that every timestamp on the wire is UTC.
func (h *Hub) now() time.Time { return h.clock.Now().UTC() }

// Register adds the hub's routes, the WebSocket upgrades, to mux. The
// node's one mux is put together by package app from each package's
// routes; no package adds routes to another's.
func (h *Hub) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/pos/ws", h.servePOS)
	mux.HandleFunc("GET /v1/terminal/ws", h.serveTerminal)
}

// Draining reports whether Drain has begun: new upgrades are refused and
// /readyz answers draining.
func (h *Hub) Draining() bool { return h.draining.Load() }

// ready returns a channel closed while Redis answers.
func (h *Hub) ready() <-chan struct{} {
	if h.opts.Health == nil {
		return closedChan
	}
	return h.opts.Health.Ready()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newConnectionID() string {
	b := make([]byte, 12)
	for {
		_, _ = rand.Read(b)
		// About one in 900 random ids holds a digit run that passes as a
		// card number; a POS may send the id as terminalId, where text
		// rules apply.
		if id := "conn_" + hex.EncodeToString(b); !protocol.ContainsCardNumber(id) {
			return id
		}
	}
}

// lockDevice takes the lock stripe of a device.
func (h *Hub) lockDevice(deviceID string) func() {
	var x uint32 = 2166136261
	for i := 0; i < len(deviceID); i++ {
		x = (x ^ uint32(deviceID[i])) * 16777619
	}
	m := &h.devLocks[x%uint32(len(h.devLocks))]
	m.Lock()
	return m.Unlock
}
