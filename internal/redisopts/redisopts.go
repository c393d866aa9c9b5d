// Package redisopts holds the settings every client of the hub's Redis is
// made with, the tests' included (internal/redistest), so that what is
// tested — retries, timeouts — is what runs. It is a package of its own
// because redisx's own tests use redistest.
package redisopts

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRequestTimeout bounds one command when the caller gives none
// (docs/ops.md#when-redis-stalls-restarts-or-fails-over's request_timeout default).
const DefaultRequestTimeout = 5 * time.Second

// Configure applies the settings to o.
//
//   - No automatic retries: a commit or an ack whose reply was lost may
//     have been applied, and sending it again (go-redis would re-send a
//     whole pipeline of commits) would turn a success into a conflict. A
//     failed command is an error to the caller, which finds out what
//     happened (session's commit resolver) or answers 503 to a client that
//     can retry safely by reference or Idempotency-Key; background loops
//     (timers, webhooks, trims) try again on their own schedule.
//   - A command waits at most as long as its caller's context allows
//     (ContextTimeoutEnabled), and never longer than requestTimeout
//     (DefaultRequestTimeout when zero) when the caller set no deadline: a
//     stalled Redis must not hold a request, or a reader, past the answer
//     time the contract promises.
func Configure(o *redis.Options, requestTimeout time.Duration) {
	if requestTimeout <= 0 {
		requestTimeout = DefaultRequestTimeout
	}
	o.PoolSize = max(o.PoolSize, 64)
	o.MaxRetries = -1
	o.DialTimeout = requestTimeout
	o.ReadTimeout = requestTimeout
	o.WriteTimeout = requestTimeout
	o.PoolTimeout = requestTimeout
	o.ContextTimeoutEnabled = true
}

// ConfigureCluster applies Configure's settings to the options of a Redis
// Cluster client, for the connections to every node alike, and turns off
// the cluster client's own retries: it would send a command again after
// an error (a timeout, a dropped connection) under the heading of
// following a redirect, and MaxRedirects bounds both. A MOVED or ASK reply
// (the cluster's slots moving, or a failover) is then an error to the
// caller like any refusal — the command was not run — and the client
// reloads the slot map, so the next command goes to the right node.
func ConfigureCluster(o *redis.ClusterOptions, requestTimeout time.Duration) {
	var one redis.Options
	one.PoolSize = o.PoolSize
	Configure(&one, requestTimeout)
	o.PoolSize = one.PoolSize
	o.MaxRetries = one.MaxRetries
	o.DialTimeout = one.DialTimeout
	o.ReadTimeout = one.ReadTimeout
	o.WriteTimeout = one.WriteTimeout
	o.PoolTimeout = one.PoolTimeout
	o.ContextTimeoutEnabled = one.ContextTimeoutEnabled
	o.MaxRedirects = -1 // none: see above
}
