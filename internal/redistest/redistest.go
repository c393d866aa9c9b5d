// Package redistest gives tests a Redis: miniredis by default, or the real
// server named by REDIS_URL (CI sets it). Each test gets its own key prefix
// and its keys are deleted afterwards, so packages may share one server.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
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
