// Package redisx opens the Redis termhub keeps its state in: a real server
// from a redis:// URL, a Redis Cluster from its seed addresses
// (OpenCluster), or, when neither is given, an embedded in-process
// miniredis so that `termhub serve` runs on a machine with nothing installed.
// Its Batcher sends the commands of concurrent callers in shared pipelines,
// and its Health watches whether Redis answers (health.go).
package redisx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redisopts"
)

// Store is an open Redis connection and how to close it.
type Store struct {
	// Client is a *redis.Client, or a *redis.ClusterClient from
	// OpenCluster.
	Client redis.UniversalClient
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
	if err := s.ping(ctx, opts.Addr); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenCluster connects to the Redis Cluster that seeds (host:port, at
// least one) belong to, with the settings of Open's client for the
// connection to every node (redisopts.ConfigureCluster), and checks that
// every master answers: a hub that starts while a shard is down would
// fail the requests of that shard's merchants only later, and less
// plainly.
func OpenCluster(ctx context.Context, seeds []string, requestTimeout time.Duration) (*Store, error) {
	if len(seeds) == 0 {
		return nil, &ParseError{Field: "redis_cluster", Err: errors.New("no seed address")}
	}
	opts := &redis.ClusterOptions{Addrs: seeds}
	redisopts.ConfigureCluster(opts, requestTimeout)
	s := &Store{Client: redis.NewClusterClient(opts)}
	if err := s.ping(ctx, strings.Join(seeds, ",")); err != nil {
		return nil, err
	}
	return s, nil
}

// ping checks that the store answers within 5 s (every master of a
// cluster), closing it when it does not; addr names it in the error.
func (s *Store) ping(ctx context.Context, addr string) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.Client.Ping(pctx).Err()
	if cc, ok := s.Client.(*redis.ClusterClient); ok && err == nil {
		err = cc.ForEachMaster(pctx, func(ctx context.Context, n *redis.Client) error {
			if err := n.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("master %s: %w", n.Options().Addr, err)
			}
			return nil
		})
	}
	if err != nil {
		s.Close()
		return fmt.Errorf("redis: %s does not answer: %w", addr, err)
	}
	return nil
}

// ParseError is a redis_url (or redis_cluster, per Field) that cannot be
// used: trying again will not help.
type ParseError struct {
	Field string // "" for redis_url
	Err   error
}

func (e *ParseError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Err.Error()
	}
	return "redis_url: " + e.Err.Error()
}

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
