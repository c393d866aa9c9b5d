// Package redisx opens the Redis termhub keeps its state in: a real server
// from a redis:// URL, or, when the URL is empty, an embedded in-process
// miniredis so that `termhub serve` runs on a machine with nothing installed.
// Its Batcher sends the commands of concurrent callers in shared pipelines,
// and its Health watches whether Redis answers (health.go).
package redisx

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redisopts"
)

// Store is an open Redis connection and how to close it.
type Store struct {
	Client *redis.Client
	// Embedded is true when the data lives in this process and dies with it.
	Embedded bool
	// Mini is the embedded server, nil for a real Redis.
	Mini *miniredis.Miniredis
}

// DefaultRequestTimeout bounds one command when the caller gives none.
const DefaultRequestTimeout = redisopts.DefaultRequestTimeout

// Open connects to url, or starts an embedded Redis when url is empty, and
// checks that it answers.
func Open(ctx context.Context, url string, requestTimeout time.Duration) (*Store, error) {
	s := &Store{}
	var opts *redis.Options
	if url == "" {
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			return nil, fmt.Errorf("redis: start embedded store: %w", err)
		}
		s.Mini, s.Embedded = m, true
		opts = &redis.Options{Addr: m.Addr()}
	} else {
		var err error
		if opts, err = redis.ParseURL(url); err != nil {
			return nil, &ParseError{Err: err}
		}
	}
	redisopts.Configure(opts, requestTimeout)
	s.Client = redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Client.Ping(pctx).Err(); err != nil {
		s.Close()
		return nil, fmt.Errorf("redis: %s does not answer: %w", opts.Addr, err)
	}
	return s, nil
}

// ParseError is a redis_url that cannot be used: trying again will not
// help.
type ParseError struct{ Err error }

func (e *ParseError) Error() string { return "redis_url: " + e.Err.Error() }

// Unwrap returns the parser's error.
func (e *ParseError) Unwrap() error { return e.Err }

// Close closes the client and stops an embedded server.
func (s *Store) Close() {
	if s.Client != nil {
		_ = s.Client.Close()
	}
	if s.Mini != nil {
		s.Mini.Close()
	}
}
