// Package apptest starts a whole termhub App for a test: the configuration
// parsed from YAML, a Redis (or Redis Cluster) from internal/redistest, a
// fake clock, the App started and served by an httptest server, and all of
// it drained and closed when the test ends; and peers dialled to it. It is
// test support, like internal/redistest. The parts of the harness that need
// no App (the test configuration, its secrets, Ctx, Eventually) are in
// package kit.
package apptest

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
	// Redis is the test's Redis; Config.KeyPrefix is its Prefix. On a
	// cluster (OnCluster, ClusterFor) only its Prefix is set: use Cluster,
	// or App.Redis.
	Redis *redistest.Redis
	// Cluster is the test's Redis Cluster, nil unless the App runs on one.
	Cluster *redistest.ClusterRedis
	// Config is the configuration the App was built with.
	Config config.Config
}

// Option changes how Start builds the App.
type Option func(*options)

type options struct {
	wallClock bool
	log       *zerolog.Logger
	redisURL  string
	onCluster bool
}

// OnCluster runs the App on the Redis Cluster named by REDIS_CLUSTER
// (redistest.Cluster: the test skips when it is not set).
func OnCluster() Option {
	return func(o *options) { o.onCluster = true }
}

// onClusterTests are the tests (ClusterFor) whose every Start runs on the
// cluster, with the ClusterRedis they share.
var onClusterTests sync.Map // testing.TB → *redistest.ClusterRedis

// ClusterFor makes every Start of t that names no Redis of its own
// (OnRedis) run on the Redis Cluster of REDIS_CLUSTER, under one key prefix,
// and returns it; t skips when REDIS_CLUSTER is not set. It lets a test
// written for one Redis run unchanged on a cluster (e2e's cluster tests).
func ClusterFor(t testing.TB) *redistest.ClusterRedis {
	t.Helper()
	r := redistest.Cluster(t)
	onClusterTests.Store(t, r)
	t.Cleanup(func() { onClusterTests.Delete(t) })
	return r
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
// key prefix of its own (on the Redis Cluster with OnCluster or
// ClusterFor), and starts an App on it behind an httptest server.
// When t ends the App is drained (for up to 5 s) and the server closed,
// before the Redis is.
func Start(t testing.TB, yamlConfig string, opts ...Option) *Env {
	t.Helper()
	e, rdb, o := prepare(t, yamlConfig, opts)
	return e.start(t, rdb, o)
}

// prepare parses yamlConfig and opens the Redis and the clock that Start
// (and StartNodes, for all its nodes) run on.
func prepare(t testing.TB, yamlConfig string, opts []Option) (*Env, redis.UniversalClient, options) {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := config.Parse([]byte(yamlConfig), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Config: cfg}
	rdb := e.openRedis(t, o)
	if !o.wallClock {
		e.Clock = clock.NewFake(epoch)
	}
	return e, rdb, o
}

// StartNodes starts n Apps of yamlConfig on one Redis (or Redis Cluster,
// as Start chooses) and one fake clock (docs/cluster.md): nodes "node-0" …
// "node-<n-1>" of one hub, each behind its own httptest server.
func StartNodes(t testing.TB, yamlConfig string, n int, opts ...Option) []*Env {
	t.Helper()
	first, rdb, o := prepare(t, yamlConfig, opts)
	envs := make([]*Env, n)
	for i := range envs {
		e := &Env{Config: first.Config, Redis: first.Redis, Cluster: first.Cluster, Clock: first.Clock}
		e.Config.NodeID = fmt.Sprintf("node-%d", i)
		envs[i] = e.start(t, rdb, o)
	}
	return envs
}

// JoinNode starts one more node, id, of the hub that of (a StartNodes
// node) belongs to: same configuration, Redis and clock.
func JoinNode(t testing.TB, of *Env, id string, opts ...Option) *Env {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	e := &Env{Config: of.Config, Redis: of.Redis, Cluster: of.Cluster, Clock: of.Clock}
	e.Config.NodeID = id
	return e.start(t, of.App.Redis, o)
}

// start starts e's App on rdb, under e.Redis's key prefix and on e.Clock
// (nil: the wall clock). On a real Redis or a cluster the App is a node
// that may share it, as `termhub serve` with redis_url or redis_cluster is.
func (e *Env) start(t testing.TB, rdb redis.UniversalClient, o options) *Env {
	t.Helper()
	e.Config.KeyPrefix = e.Redis.Prefix
	switch {
	case e.Cluster != nil:
		e.Config.RedisCluster = os.Getenv("REDIS_CLUSTER")
	case e.Redis.URL != "":
		e.Config.RedisURL = e.Redis.URL
	}
	var clk clock.Clock // nil: the App's wall clock
	if e.Clock != nil {
		clk = e.Clock
	}
	log := zerolog.New(io.Discard)
	if o.log != nil {
		log = *o.log
	} else if os.Getenv("TERMHUB_TEST_LOG") != "" {
		log = zerolog.New(zerolog.NewTestWriter(t))
	}
	e.App = app.New(e.Config, rdb, clk, log)
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

// openRedis sets e.Redis (and e.Cluster) to the Redis Start's options
// name, and returns the client the App is to use.
func (e *Env) openRedis(t testing.TB, o options) redis.UniversalClient {
	t.Helper()
	c, _ := onClusterTests.Load(t)
	switch {
	case o.redisURL != "":
		e.Redis = redistest.Dial(t, o.redisURL)
	case o.onCluster || c != nil:
		if c == nil {
			c = redistest.Cluster(t)
		}
		e.Cluster = c.(*redistest.ClusterRedis)
		e.Redis = &redistest.Redis{Prefix: e.Cluster.Prefix}
		return e.Cluster.Client
	default:
		e.Redis = redistest.New(t)
	}
	return e.Redis.Client
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
