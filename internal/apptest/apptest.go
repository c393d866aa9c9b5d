// Package apptest starts a whole termhub App for a test: the configuration
// parsed from YAML, a Redis from internal/redistest, a fake clock, the App
// started and served by an httptest server, and all of it drained and closed
// when the test ends; and peers dialled to it. It is test support, like
// internal/redistest. The parts of the harness that need no App (the test
// configuration, its secrets, Ctx, Eventually) are in package kit.
package apptest

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// epoch is the time the fake clock starts at.
var epoch = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// drainTimeout bounds the App's drain when the test ends.
const drainTimeout = 5 * time.Second

// Env is one running App for a test.
type Env struct {
	// App is the started App.
	App *app.App
	// Clock is the App's fake clock, starting at 2026-11-22 10:00 UTC; nil
	// with WallClock.
	Clock *clock.Fake
	// Srv serves App.Handler.
	Srv *httptest.Server
	// Redis is the test's Redis; Config.KeyPrefix is its Prefix.
	Redis *redistest.Redis
	// Config is the configuration the App was built with.
	Config config.Config
}

// Option changes how Start builds the App.
type Option func(*options)

type options struct {
	wallClock bool
	log       *zerolog.Logger
	redisURL  string
}

// OnRedis runs the App on the real Redis at url (a private server of the
// test's, say, that it stalls or restarts) instead of the default one.
func OnRedis(url string) Option { return func(o *options) { o.redisURL = url } }

// WallClock runs the App on the wall clock instead of a fake one; Env.Clock
// is then nil.
func WallClock() Option { return func(o *options) { o.wallClock = true } }

// Logger gives the App log instead of the default, which discards
// everything unless TERMHUB_TEST_LOG is set, when it writes to the test's
// output.
func Logger(log zerolog.Logger) Option { return func(o *options) { o.log = &log } }

// Start parses yamlConfig (with no environment variables), gives it a Redis
// key prefix of its own, and starts an App on it behind an httptest server.
// When t ends the App is drained (for up to 5 s) and the server closed,
// before the Redis is.
func Start(t testing.TB, yamlConfig string, opts ...Option) *Env {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := config.Parse([]byte(yamlConfig), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var r *redistest.Redis
	if o.redisURL != "" {
		r = redistest.Dial(t, o.redisURL)
	} else {
		r = redistest.New(t)
	}
	var clk *clock.Fake
	if !o.wallClock {
		clk = clock.NewFake(epoch)
	}
	return startOn(t, cfg, r, clk, o)
}

// StartNodes starts n Apps of yamlConfig on one Redis and one fake clock
// (CONTRACT §12): nodes "node-0" … "node-<n-1>" of one hub, each behind
// its own httptest server.
func StartNodes(t testing.TB, yamlConfig string, n int, opts ...Option) []*Env {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := config.Parse([]byte(yamlConfig), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var r *redistest.Redis
	if o.redisURL != "" {
		r = redistest.Dial(t, o.redisURL)
	} else {
		r = redistest.New(t)
	}
	var clk *clock.Fake
	if !o.wallClock {
		clk = clock.NewFake(epoch)
	}
	envs := make([]*Env, n)
	for i := range envs {
		c := cfg
		c.NodeID = fmt.Sprintf("node-%d", i)
		envs[i] = startOn(t, c, r, clk, o)
	}
	return envs
}

// startOn starts an App of cfg on r (the key prefix is r's) and clk (nil:
// the wall clock).
func startOn(t testing.TB, cfg config.Config, r *redistest.Redis, clk *clock.Fake, o options) *Env {
	t.Helper()
	cfg.KeyPrefix = r.Prefix
	if r.URL != "" {
		// A Redis of its own makes the App a node that may share it, as
		// `termhub serve` with redis_url does.
		cfg.RedisURL = r.URL
	}
	e := &Env{Redis: r, Config: cfg, Clock: clk}
	var c clock.Clock // nil: the App's wall clock
	if clk != nil {
		c = clk
	}
	log := zerolog.New(io.Discard)
	if o.log != nil {
		log = *o.log
	} else if os.Getenv("TERMHUB_TEST_LOG") != "" {
		log = zerolog.New(zerolog.NewTestWriter(t))
	}
	e.App = app.New(cfg, r.Client, c, log)
	if err := e.App.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Srv = httptest.NewServer(e.App.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		_ = e.App.Drain(ctx)
		e.Srv.Close()
	})
	return e
}

// ClientOptions are the options of a client of the App: its URL, and
// signatures dated by the fake clock (by the wall clock with WallClock).
func (e *Env) ClientOptions() client.Options {
	o := client.Options{BaseURL: e.Srv.URL}
	if e.Clock != nil {
		o.Now = e.Clock.Now
	}
	return o
}

// POS connects a POS with API key id of kit.Config.
func (e *Env) POS(t testing.TB, id string) *client.Conn {
	t.Helper()
	return DialPOS(t, e.ClientOptions(), id, kit.Secrets[id])
}

// Terminal connects terminal id of kit.Config and waits until the hub has
// it online on that connection.
func (e *Env) Terminal(t testing.TB, id string) *client.Conn {
	t.Helper()
	c := DialTerminal(t, e.ClientOptions(), id, kit.Secrets[id])
	WaitOnline(t, e.App, id, c)
	return c
}

// DialPOS connects a POS with API key id and its secret, failing the test
// if the hub refuses; the connection is closed when the test ends.
func DialPOS(t testing.TB, opts client.Options, id, secret string) *client.Conn {
	t.Helper()
	c, err := client.DialPOS(kit.Ctx(t), opts, id, secret)
	if err != nil {
		t.Fatalf("dial POS %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// DialTerminal connects terminal id with its secret, failing the test if
// the hub refuses; the connection is closed when the test ends.
func DialTerminal(t testing.TB, opts client.Options, id, secret string) *client.Conn {
	t.Helper()
	c, err := client.DialTerminal(kit.Ctx(t), opts, id, secret)
	if err != nil {
		t.Fatalf("dial terminal %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// WaitOnline waits until a's hub has terminal id online on connection c.
func WaitOnline(t testing.TB, a *app.App, id string, c *client.Conn) {
	t.Helper()
	kit.Eventually(t, id+" online on "+c.ConnectionID(), func() bool {
		s, cid, _ := a.Hub.TerminalLive(id)
		return s == protocol.TerminalOnline && cid == c.ConnectionID()
	})
}
