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

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
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

// Real reports whether tests run against a real Redis.
func Real() bool { return os.Getenv("REDIS_URL") != "" }

// New returns a Redis for t, cleaned up when t ends.
func New(t testing.TB) *Redis {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	r := &Redis{Prefix: "test:" + hex.EncodeToString(b) + ":"}
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		r.URL = url
		r.Client = redis.NewClient(opts)
		if err := r.Client.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("REDIS_URL=%s does not answer: %v", url, err)
		}
		t.Cleanup(func() {
			ctx := context.Background()
			iter := r.Client.Scan(ctx, 0, r.Prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				r.Client.Del(ctx, iter.Val())
			}
			_ = r.Client.Close()
		})
		return r
	}
	r.Mini = miniredis.RunT(t)
	r.Client = redis.NewClient(&redis.Options{Addr: r.Mini.Addr()})
	t.Cleanup(func() { _ = r.Client.Close() })
	return r
}
