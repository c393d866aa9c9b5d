// Package redistest gives tests a Redis: miniredis by default, or the real
// server named by REDIS_URL (CI sets it); and, for the cluster tests, the
// Redis Cluster named by REDIS_CLUSTER (Cluster). Each test gets its own key
// prefix and its keys are deleted afterwards, so packages may share one
// server.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redisopts"
)

// Redis is a test's Redis.
type Redis struct {
	Client *redis.Client
	// Prefix is this test's key prefix; pass it to every store.
	Prefix string
	// URL is the server's address ("" for miniredis: use Mini or Client).
	URL string
	// Mini is the miniredis server, nil when running on real Redis.
	Mini *miniredis.Miniredis
}

// Configure gives a test client the settings of the hub's own clients.
func Configure(o *redis.Options) { redisopts.Configure(o, 0) }

// Real reports whether tests run against a real Redis.
func Real() bool { return os.Getenv("REDIS_URL") != "" }

// New returns a Redis for t, cleaned up when t ends.
func New(t testing.TB) *Redis {
	t.Helper()
	if url := os.Getenv("REDIS_URL"); url != "" {
		return Dial(t, url)
	}
	r := &Redis{Prefix: newPrefix()}
	r.Mini = miniredis.RunT(t)
	opts := &redis.Options{Addr: r.Mini.Addr()}
	Configure(opts)
	r.Client = redis.NewClient(opts)
	t.Cleanup(func() { _ = r.Client.Close() })
	return r
}

// Dial returns the real Redis at url for t, with a key prefix of its own
// whose keys are deleted when t ends (if the server still answers then).
func Dial(t testing.TB, url string) *Redis {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("redis url %s: %v", url, err)
	}
	r := &Redis{Prefix: newPrefix(), URL: url}
	Configure(opts)
	r.Client = redis.NewClient(opts)
	if err := r.Client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis %s does not answer: %v", url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := r.Client.Scan(ctx, 0, r.Prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			r.Client.Del(ctx, iter.Val())
		}
		_ = r.Client.Close()
	})
	return r
}

func newPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test:" + hex.EncodeToString(b) + ":"
}

// ClusterEnv names the environment variable that holds the seed addresses
// (host:port, comma-separated) of the Redis Cluster for Cluster.
const ClusterEnv = "REDIS_CLUSTER"

// ClusterSkip is why a cluster test skips when ClusterEnv is not set.
const ClusterSkip = "REDIS_CLUSTER not set: set it to a Redis Cluster's seed addresses (.ci/run starts one) to run the cluster tests"

// ClusterRedis is a test's Redis Cluster.
type ClusterRedis struct {
	// Client is configured as the hub's (redisopts.ConfigureCluster).
	Client *redis.ClusterClient
	// Prefix is this test's key prefix; pass it to every store.
	Prefix string
	// Seeds are the addresses from REDIS_CLUSTER.
	Seeds []string
}

// Cluster returns the Redis Cluster named by REDIS_CLUSTER for t, with a
// key prefix of its own whose keys are deleted from every master when t
// ends. It skips t when REDIS_CLUSTER is not set.
func Cluster(t testing.TB) *ClusterRedis {
	t.Helper()
	env := os.Getenv(ClusterEnv)
	if strings.TrimSpace(env) == "" {
		t.Skip(ClusterSkip)
	}
	r := &ClusterRedis{Prefix: newPrefix()}
	for _, s := range strings.Split(env, ",") {
		r.Seeds = append(r.Seeds, strings.TrimSpace(s))
	}
	opts := &redis.ClusterOptions{Addrs: r.Seeds}
	redisopts.ConfigureCluster(opts, 0)
	r.Client = redis.NewClusterClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Client.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.Ping(ctx).Err()
	}); err != nil {
		_ = r.Client.Close()
		t.Fatalf("Redis Cluster %s does not answer: %v", env, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A SCAN sees one node's keys only: each master is scanned, and
		// its keys deleted there, one at a time (keys of different slots
		// cannot share a DEL).
		_ = r.Client.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			iter := n.Scan(ctx, 0, r.Prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				n.Del(ctx, iter.Val())
			}
			return iter.Err()
		})
		_ = r.Client.Close()
	})
	return r
}

// SeeHook is a Redis client hook that shows every command, alone or in a
// pipeline, to see before it is sent (it may hold it there).
type SeeHook func(cmds ...redis.Cmder)

// DialHook is the client's own.
func (f SeeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook shows a lone command.
func (f SeeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		f(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook shows a pipeline's commands together.
func (f SeeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		f(cmds...)
		return next(ctx, cmds)
	}
}
