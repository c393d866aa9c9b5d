// Package app assembles a running termhub from its parts: the hub (live
// connections), the session engine (transactions on Redis) and the outbox.
// `termhub serve` and the end-to-end tests build the same App, so the tests
// exercise exactly what ships.
package app

import (
	"context"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/httpapi"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/metrics"
	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/ops"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
	"github.com/termhub/termhub/webhook"
)

// App is one termhub node.
type App struct {
	Config  config.Config
	Hub     *hub.Hub
	API     *httpapi.Server // REST, HTTP event sessions, health and metrics routes
	Engine  *session.Engine
	Outbox  *queue.Outbox
	Metrics *metrics.Metrics
	Redis   redis.UniversalClient
	Clock   clock.Clock
	Log     zerolog.Logger
	Ops     *ops.Server // dashboard, ops feed and kick endpoint
	// Health probes Redis: /readyz, answering 503 at once while it does
	// not answer, and noticing a Redis that came back empty (docs/ops.md#when-redis-stalls-restarts-or-fails-over).
	Health *redisx.Health

	Webhooks *webhook.Sender // delivers the merchants' webhook events (docs/webhooks.md)
	// Node is this App's place among several nodes on one Redis (package
	// nodes); nil when it is alone (the embedded Redis).
	Node *nodes.Node

	started time.Time // when Start ran
	relay   *opsRelay // with several nodes: the ops feeds' transactions from the others

	trimMu sync.Mutex
	trim   clock.Timer // the next outbox trim; guarded by trimMu
	closed bool        // guarded by trimMu
}

// New builds an App on rdb. clk may be nil (wall clock).
func New(cfg config.Config, rdb redis.UniversalClient, clk clock.Clock, log zerolog.Logger) *App {
	if clk == nil {
		clk = clock.Real{}
	}
	ks := keys.Space{Prefix: cfg.KeyPrefix}
	dir := config.NewDirectory(cfg)
	a := &App{Config: cfg, Redis: rdb, Clock: clk, Log: log, Outbox: queue.NewOutbox(rdb, ks), Metrics: metrics.New()}
	if Shared(cfg) {
		_, sharded := rdb.(*redis.ClusterClient)
		a.Node = nodes.New(nodes.Options{Redis: rdb, Keys: ks, ID: cfg.NodeID, Address: cfg.Listen,
			Timeout: cfg.NodeTimeout.D(), Clock: clk, Logger: log, Sharded: sharded, RequestTimeout: cfg.RequestTimeout.D()})
		log = log.With().Str("node", a.Node.ID()).Logger()
		a.Log = log
	}
	a.Health = redisx.NewHealth(redisx.HealthOptions{
		Client: rdb, MarkerKey: ks.Marker(), Logger: log,
		OnChange: func(up bool) {
			if up {
				a.Metrics.RedisUp.Set(1)
				return
			}
			a.Metrics.RedisUp.Set(0)
			a.Metrics.RedisOutages.Inc()
		},
		OnDataLoss: func() {
			a.Metrics.RedisDataLosses.Inc()
			a.Engine.ForgetCaches()
		},
	})
	a.Engine = session.NewEngine(session.Options{
		Store:            session.NewStore(rdb, ks),
		Metrics:          a.Metrics,
		Clock:            clk,
		Logger:           log,
		PaymentTimeout:   cfg.PaymentTimeout.D(),
		SignatureTimeout: cfg.SignatureTimeout.D(),
		Webhooks: func(merchantID string) bool {
			m, ok := a.Hub.Directory().Merchant(merchantID)
			return ok && m.WebhookURL != ""
		},
		Ready:          a.Health.Ready,
		Merchants:      func() []string { return a.Hub.Directory().MerchantIDs() },
		RequestTimeout: cfg.RequestTimeout.D(),
		Claim:          a.claim(),
	})
	sessions := httpapi.RedisSessions{RDB: rdb, Key: ks.Session}
	a.Hub = hub.New(hub.Options{
		Directory:         dir,
		Clock:             clk,
		Logger:            log,
		HeartbeatInterval: cfg.HeartbeatInterval.D(),
		GracePeriod:       cfg.GracePeriod.D(),
		OpsToken:          cfg.OpsToken,
		Engine:            a.Engine,
		Metrics:           a.Metrics,
		Outbox:            a.Outbox,
		Sessions:          sessions,
		Health:            a.Health,
		RequestTimeout:    cfg.RequestTimeout.D(),
		RateLimit:         cfg.RateLimit,
		Replays:           httpapi.RedisReplays{RDB: rdb, Key: ks.Replay},
		Node:              a.Node,
	})
	a.API = httpapi.New(httpapi.Options{Hub: a.Hub, Engine: a.Engine, Outbox: a.Outbox, Sessions: sessions,
		Health: a.Health, Clock: clk, Logger: log, RequestTimeout: cfg.RequestTimeout.D()})
	a.Engine.SetTerminals(a.Hub)
	a.Engine.SetSink(a.Hub)
	// Ops owns the engine's one observer slot and fans out (Ops.ObserveTransactions).
	a.Ops = ops.New(ops.Options{Hub: a.Hub, Engine: a.Engine, Token: cfg.OpsToken, Clock: clk, Logger: log,
		Redis: rdb, Keys: ks, CookieSecure: cfg.OpsCookieSecure, RequestTimeout: cfg.RequestTimeout.D(),
		Watching: a.opsWatching, Nodes: a.Nodes})
	a.Engine.SetObserver(a.Ops.PublishTransaction)
	if a.Node != nil {
		a.relay = newOpsRelay(a)
	}
	a.newWebhooks(cfg, rdb, ks)
	a.Metrics.GaugeFunc("termhub_outbox_depth", "Durable POS messages kept in the outboxes (unacknowledged or within retention).", a.outboxDepth)
	a.Metrics.GaugeFunc("termhub_deadline_timers", "Transaction deadlines armed in this process.", func() float64 { return float64(a.Engine.ArmedTimers()) })
	return a
}

// Shared reports whether cfg makes a node that shares its Redis with
// others (a Redis of its own, or a node_id): every Redis but the embedded
// one may be shared, so the node acts as one of several from the start.
func Shared(cfg config.Config) bool {
	return cfg.RedisURL != "" || cfg.RedisCluster != "" || cfg.NodeID != ""
}

// opsWatching tells the other nodes whether this one has ops feeds open.
func (a *App) opsWatching(on bool) {
	if a.relay != nil {
		a.relay.watching(on)
	}
}

// claim is the engine's deadline claim: the node's, or none when alone.
// While no other node was alive at the last heartbeat, a deadline is
// applied without one, saving a round trip: a node that joined since may
// apply it too, and the conditional commit lets only one of them change
// the transaction.
func (a *App) claim() func(ctx context.Context, merchantID, member string, at time.Time) (bool, error) {
	if a.Node == nil {
		return nil
	}
	return func(ctx context.Context, merchantID, member string, at time.Time) (bool, error) {
		if len(a.Node.LiveIDs()) == 1 {
			return true, nil
		}
		return a.Node.ClaimDeadline(ctx, merchantID, member, at)
	}
}

// outboxDepth counts the entries of every outbox for /metrics, in one
// pipeline; -1 when Redis does not answer within a second (a scrape during
// an outage is answered at once: the gate fails the pipeline).
func (a *App) outboxDepth() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	dir := a.Hub.Directory()
	var outboxes [][2]string
	for _, m := range dir.MerchantIDs() {
		for _, k := range dir.KeyIDs(m) {
			outboxes = append(outboxes, [2]string{m, k})
		}
	}
	n, err := a.Outbox.DepthAll(ctx, outboxes)
	if err != nil {
		return -1
	}
	return float64(n)
}

// Start re-arms every deadline kept in Redis (those that fell due while no
// hub ran fire at once) and starts the grace period of every transaction
// whose terminal is not connected (a restarted hub has no terminals yet;
// with several nodes, one not connected to a live node). A node joins the
// others first: it hears them before it serves.
func (a *App) Start(ctx context.Context) error {
	a.started = a.Clock.Now().UTC()
	if err := a.Health.Start(ctx); err != nil {
		return err
	}
	if a.Node != nil {
		if err := a.Node.Start(ctx, a.Hub); err != nil {
			return err
		}
		if err := a.Hub.LoadShared(ctx); err != nil {
			return err
		}
	}
	ids := a.Hub.Directory().MerchantIDs()
	sort.Strings(ids)
	if err := a.Engine.Start(ctx, ids); err != nil {
		return err
	}
	dir := a.Hub.Directory()
	for _, m := range ids {
		var devices []string
		for _, t := range dir.Terminals(m) {
			devices = append(devices, t.DeviceID)
		}
		busy, err := a.Engine.DevicesWithWork(ctx, m, devices)
		if err != nil {
			return err
		}
		isBusy := map[string]bool{}
		for _, d := range busy {
			isBusy[d] = true
		}
		marked, err := a.Hub.TakeOver(ctx, m, devices, isBusy)
		if err != nil {
			return err
		}
		for _, d := range busy {
			until, ok := marked[d]
			if !ok {
				continue // already back, or online on another node
			}
			if err := a.Engine.TerminalDropped(ctx, m, d, until); err != nil {
				return err
			}
			a.Log.Info().Str("merchantId", m).Str("deviceId", d).Msg("terminal had work in flight at start-up: waiting for it to reconnect")
		}
	}
	a.scheduleTrim()
	// Webhooks: resume unfinished deliveries, then read new events.
	return a.Webhooks.Start(ctx)
}

// trimEvery is how often outboxes are trimmed by outbox_retention.
const trimEvery = time.Hour

func (a *App) scheduleTrim() {
	a.trimMu.Lock()
	defer a.trimMu.Unlock()
	if a.closed {
		return
	}
	a.trim = a.Clock.AfterFunc(trimEvery, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := a.Trim(ctx); err != nil {
			a.Log.Error().Err(err).Msg("outbox trim failed")
		}
		a.scheduleTrim()
	})
}

// Trim drops durable POS messages older than outbox_retention from every API
// key's outbox, acknowledged or not (acknowledged ones go at ack time).
func (a *App) Trim(ctx context.Context) error {
	dir := a.Hub.Directory()
	for _, m := range dir.MerchantIDs() {
		for _, k := range dir.KeyIDs(m) {
			if err := a.Outbox.Trim(ctx, m, k, a.Config.OutboxRetention.D(), a.Clock.Now()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Routes returns a mux of every route of the node. It is the one place
// where routes are put together: each package gives its own (Hub.Register,
// API.Register, Ops.Register, the webhook status handler), and none adds
// routes to another's mux.
func (a *App) Routes() *http.ServeMux {
	mux := http.NewServeMux()
	a.Hub.Register(mux)
	a.API.Register(mux)
	a.Ops.Register(mux)
	mux.Handle("GET /v1/ops/webhooks", a.webhookStatus())
	mux.HandleFunc("GET /v1/ops/nodes", a.Hub.OpsHTTP(a.handleNodes))
	return mux
}

// Nodes lists the live nodes of the hub, or this one alone ("local").
func (a *App) Nodes(ctx context.Context) ([]nodes.Info, error) {
	if a.Node == nil {
		return []nodes.Info{{ID: "local", Address: a.Config.Listen, StartedAt: a.started,
			LastSeen: a.Clock.Now().UTC(), Connections: a.Hub.Counts()}}, nil
	}
	return a.Node.Nodes(ctx)
}

// handleNodes is GET /v1/ops/nodes.
func (a *App) handleNodes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.Config.RequestTimeout.D())
	defer cancel()
	list, err := a.Nodes(ctx)
	if err != nil {
		hub.WriteError(w, a.Hub.ClientError(err, a.Log))
		return
	}
	hub.WriteJSON(w, http.StatusOK, map[string]any{"data": list})
}

// Handler serves every endpoint, each request's latency measured by route.
func (a *App) Handler() http.Handler { return a.API.Timed(a.Routes()) }

// Drain tells every client to reconnect and waits for them to go, then
// for the engine's recovery work (within ctx), and stops the background
// work: webhooks (undelivered ones stay queued in Redis), the engine's
// workers and sweeper, the Redis probe.
func (a *App) Drain(ctx context.Context) error {
	_ = a.Ops.Close(ctx) // ops feeds are not hub connections: end them too
	defer a.Close()
	err := a.Hub.Drain(ctx)
	// What is held (a lost commit, a terminal's events) is carried out if
	// Redis answers in time; else the restarted hub reads Redis, and the
	// terminal re-sends its results.
	a.Engine.WaitIdle(ctx)
	if a.Node != nil {
		// Its clients are gone and their records updated (what a drain cut
		// short left is released here): leave, so that the others need
		// not wait node_timeout to know. A node that cannot release stays
		// in the registry, for the others to release it when it is dead.
		rctx, cancel := context.WithTimeout(context.Background(), a.Config.RequestTimeout.D())
		rerr := a.Hub.ReleaseOwn(rctx)
		cancel()
		a.Node.Flush(time.Second)
		if rerr != nil {
			a.Log.Warn().Err(rerr).Msg("could not release what this node held; the others do when they find it dead after node_timeout")
			a.Node.Close()
		} else if lerr := a.Node.Leave(context.Background()); lerr != nil {
			a.Log.Warn().Err(lerr).Msg("could not leave the node registry; the others find this node dead after node_timeout")
		}
	}
	return err
}

// Close stops what Start started, connections aside (Drain ends those
// first): webhook delivery (undelivered events stay queued in Redis), the
// engine's workers, sweeper and timers, the outbox trim, the terminal
// status history (what is queued is written first, within
// request_timeout) and the Redis probe. A start that failed is undone by
// it.
func (a *App) Close() {
	a.trimMu.Lock()
	a.closed = true
	if a.trim != nil {
		a.trim.Stop()
	}
	a.trimMu.Unlock()
	a.Webhooks.Close()
	a.Engine.Close()
	// The status changes of the drain are written before Redis is let go.
	hctx, cancel := context.WithTimeout(context.Background(), a.Config.RequestTimeout.D())
	_ = a.Ops.StopHistory(hctx)
	cancel()
	if a.Node != nil {
		a.Node.Close()
	}
	a.Health.Close()
}

// Reload swaps in a new configuration's merchants, keys and terminals.
func (a *App) Reload(cfg config.Config) {
	a.Hub.Reload(config.NewDirectory(cfg))
	a.refreshWebhooks()
}

// ---- webhooks (package webhook) ----

// newWebhooks builds the webhook sender. Each attempt reads the merchant's
// webhook_url and webhook_secret from the hub's current directory, so a
// reload takes effect at the next attempt.
func (a *App) newWebhooks(cfg config.Config, rdb redis.UniversalClient, ks keys.Space) {
	a.Webhooks = webhook.New(webhook.Options{
		Consumer:  webhookConsumer(cfg),
		Redis:     rdb,
		Keys:      ks,
		Clock:     a.Clock,
		Logger:    a.Log,
		Metrics:   a.Metrics,
		Directory: a.Hub.Directory,
		RetryBase: cfg.WebhookRetryBase.D(),
		Poll:      a.webhookPoll(),
	})
}

// webhookPoll is how often, with several nodes, each webhook worker looks
// at the shared delivery schedule without a reason of its own.
func (a *App) webhookPoll() time.Duration {
	if a.Node == nil {
		return 0
	}
	return 2 * time.Second
}

// webhookConsumer names this node's consumer of the webhook streams: its
// node_id, else its host name and listen address — the same after a
// restart, so that it resumes what it had read (a new name would leave
// that to another consumer's claim), and different for two nodes on one
// host.
func webhookConsumer(cfg config.Config) string {
	if cfg.NodeID != "" {
		return cfg.NodeID
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "termhub"
	}
	return host + "/" + cfg.Listen
}

// webhookStatus is GET /v1/ops/webhooks, behind the ops token (failures
// limited as on every ops route).
func (a *App) webhookStatus() http.Handler {
	return a.Hub.OpsHTTP(a.Webhooks.OpsHandler(func(r *http.Request) bool {
		return a.Hub.OpsAuthorized(r, a.Config.OpsToken)
	}))
}

// refreshWebhooks starts delivery for merchants a reload gave a webhook_url.
func (a *App) refreshWebhooks() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Webhooks.Refresh(ctx); err != nil {
		a.Log.Error().Err(err).Msg("starting webhook delivery after reload failed")
	}
}
