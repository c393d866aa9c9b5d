// Package app assembles a running termhub from its parts: the hub (live
// connections), the session engine (transactions on Redis) and the outbox.
// `termhub serve` and the end-to-end tests build the same App, so the tests
// exercise exactly what ships.
package app

import (
	"context"
	"net/http"
	"sort"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/queue"
	"github.com/termhub/termhub/session"
)

// App is one termhub node.
type App struct {
	Config config.Config
	Hub    *hub.Hub
	Engine *session.Engine
	Outbox *queue.Outbox
	Redis  redis.UniversalClient
	Clock  clock.Clock
	Log    zerolog.Logger
}

// New builds an App on rdb. clk may be nil (wall clock).
func New(cfg config.Config, rdb redis.UniversalClient, clk clock.Clock, log zerolog.Logger) *App {
	if clk == nil {
		clk = clock.Real{}
	}
	ks := keys.Space{Prefix: cfg.KeyPrefix}
	dir := config.NewDirectory(cfg)
	a := &App{Config: cfg, Redis: rdb, Clock: clk, Log: log, Outbox: queue.NewOutbox(rdb, ks)}
	a.Engine = session.NewEngine(session.Options{
		Store:            session.NewStore(rdb, ks),
		Clock:            clk,
		Logger:           log,
		PaymentTimeout:   cfg.PaymentTimeout.D(),
		SignatureTimeout: cfg.SignatureTimeout.D(),
		Webhooks: func(merchantID string) bool {
			m, ok := a.Hub.Directory().Merchant(merchantID)
			return ok && m.WebhookURL != ""
		},
	})
	a.Hub = hub.New(hub.Options{
		Directory:         dir,
		Clock:             clk,
		Logger:            log,
		HeartbeatInterval: cfg.HeartbeatInterval.D(),
		GracePeriod:       cfg.GracePeriod.D(),
		OpsToken:          cfg.OpsToken,
		Engine:            a.Engine,
		Outbox:            a.Outbox,
		Ready:             func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	})
	a.Engine.SetTerminals(a.Hub)
	a.Engine.SetSink(a.Hub)
	return a
}

// Start re-arms every deadline kept in Redis (those that fell due while no
// hub ran fire at once) and starts the grace period of every transaction
// whose terminal is not connected (a restarted hub has no terminals yet).
func (a *App) Start(ctx context.Context) error {
	ids := a.Hub.Directory().MerchantIDs()
	sort.Strings(ids)
	if err := a.Engine.Start(ctx, ids); err != nil {
		return err
	}
	return nil
}

// Handler serves every endpoint.
func (a *App) Handler() http.Handler { return a.Hub.Handler() }

// Drain tells every client to reconnect and waits for them to go.
func (a *App) Drain(ctx context.Context) error { return a.Hub.Drain(ctx) }

// Reload swaps in a new configuration's merchants, keys and terminals.
func (a *App) Reload(cfg config.Config) { a.Hub.Reload(config.NewDirectory(cfg)) }
