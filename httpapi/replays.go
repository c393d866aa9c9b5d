package httpapi

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisReplays is the hub.Replays of a node: the signatures of accepted
// POSTs in Redis (SET NX PX), so a replay is caught by any node on the same
// Redis and after a restart. It lives with the HTTP API, the only caller of
// the replay guard.
type RedisReplays struct {
	RDB redis.UniversalClient
	Key func(merchantID, keyID, sig string) string
}

// First records sig; when it was there already, it reads what the first
// request recorded (a second round trip, only for a repeat).
func (s RedisReplays) First(ctx context.Context, m, k, sig, value string, ttl time.Duration) (bool, string, error) {
	key := s.Key(m, k, sig)
	ok, err := s.RDB.SetNX(ctx, key, value, ttl).Result()
	if err != nil || ok {
		return ok, "", err
	}
	prev, err := s.RDB.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		// Expired between the two commands: its window is over, and the
		// timestamp check refuses the request from now on; this once it
		// counts as a repeat all the same.
		return false, "", nil
	}
	return false, prev, err
}
