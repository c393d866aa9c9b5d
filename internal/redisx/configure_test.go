package redisx_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/internal/redisx"
)

// TestRedistestConfiguresLikeTheHub keeps the tests' Redis clients
// configured as the hub's are, so that what is tested (retries, timeouts)
// is what runs.
func TestRedistestConfiguresLikeTheHub(t *testing.T) {
	var hub, test redis.Options
	redisx.Configure(&hub, redisx.DefaultRequestTimeout)
	redistest.Configure(&test)
	if hub.PoolSize != test.PoolSize || hub.MaxRetries != test.MaxRetries || hub.DialTimeout != test.DialTimeout ||
		hub.ReadTimeout != test.ReadTimeout || hub.WriteTimeout != test.WriteTimeout || hub.PoolTimeout != test.PoolTimeout ||
		hub.ContextTimeoutEnabled != test.ContextTimeoutEnabled {
		t.Fatalf("redistest.Configure %+v differs from redisx.Configure %+v", test, hub)
	}
}
