package redisx_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/internal/redisx"
)

// OpenCluster connects to the cluster with the hub's settings: every
// master answers, commands reach the node of their slot, and the client
// follows no redirect.
func TestOpenCluster(t *testing.T) {
	r := redistest.Cluster(t)
	s, err := redisx.OpenCluster(context.Background(), r.Seeds[:1], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cc, ok := s.Client.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("client is a %T, want a *redis.ClusterClient", s.Client)
	}
	if o := cc.Options(); o.MaxRedirects != 0 || o.MaxRetries != -1 || o.ReadTimeout != redisx.DefaultRequestTimeout || !o.ContextTimeoutEnabled || o.PoolSize < 64 {
		t.Errorf("options: redirects %d, retries %d, read timeout %v, context timeouts %v, pool %d",
			o.MaxRedirects, o.MaxRetries, o.ReadTimeout, o.ContextTimeoutEnabled, o.PoolSize)
	}
	ctx := context.Background()
	// Keys of two merchants on (almost surely) different masters, found
	// from the one seed given.
	masters := map[string]bool{}
	for i := range 20 {
		k := fmt.Sprintf("%sx:{m%d}", r.Prefix, i)
		if err := s.Client.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		masters[n.Options().Addr] = true
	}
	if len(masters) < 2 {
		t.Errorf("20 merchants' keys are all on %v: want them spread over the masters", masters)
	}
}

func TestOpenClusterRefusals(t *testing.T) {
	if _, err := redisx.OpenCluster(context.Background(), nil, 0); err == nil || !strings.Contains(err.Error(), "redis_cluster") {
		t.Errorf("no seeds: %v, want an error naming redis_cluster", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// Port 1 on the loopback: nothing listens there.
	if _, err := redisx.OpenCluster(ctx, []string{"127.0.0.1:1"}, time.Second); err == nil {
		t.Error("a cluster that does not answer was opened")
	}
}

// A MOVED reply — a node asked for a key of a slot it does not serve —
// is a refusal: the command was not run.
func TestMovedIsRefused(t *testing.T) {
	r := redistest.Cluster(t)
	ctx := context.Background()
	k := r.Prefix + "moved:{m}"
	owner, err := r.Client.MasterForKey(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // ForEachMaster calls in parallel
	var moved error
	_ = r.Client.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		if n.Options().Addr != owner.Options().Addr {
			if err := n.Set(ctx, k, "v", 0).Err(); err != nil {
				mu.Lock()
				moved = err
				mu.Unlock()
			}
		}
		return nil
	})
	if moved == nil || !strings.HasPrefix(moved.Error(), "MOVED") {
		t.Fatalf("SET on a node that does not serve the slot: %v, want MOVED", moved)
	}
	if !redisx.Refused(moved) || !redisx.Outage(moved) {
		t.Errorf("Refused(%v) = %v, Outage = %v; want both true", moved, redisx.Refused(moved), redisx.Outage(moved))
	}
	if n, _ := r.Client.Exists(ctx, k).Result(); n != 0 {
		t.Errorf("the refused SET was applied")
	}
}

// Health works on a cluster client: the probe writes and reads the marker
// and pings every master, and a lost marker is a data loss.
func TestHealthOnCluster(t *testing.T) {
	r := redistest.Cluster(t)
	var mu sync.Mutex
	losses := 0
	h := redisx.NewHealth(redisx.HealthOptions{Client: r.Client, MarkerKey: r.Prefix + "redis-marker", Logger: zerolog.Nop(),
		OnDataLoss: func() { mu.Lock(); losses++; mu.Unlock() }})
	t.Cleanup(h.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Check(ctx); err != nil || !h.Up() {
		t.Fatalf("probe: %v, up %v", err, h.Up())
	}
	token, err := r.Client.Get(ctx, r.Prefix+"redis-marker").Result()
	if err != nil || token == "" {
		t.Fatalf("marker after the first probe: %q, %v", token, err)
	}
	// The gate passes commands, pipelines and scripts while up.
	b := redisx.NewBatcher(r.Client, 0)
	script := redis.NewScript(`redis.call("SET", KEYS[1], ARGV[1]); return redis.call("INCR", KEYS[2])`)
	keys := []string{r.Prefix + "a:{m1}", r.Prefix + "b:{m1}"}
	if n, err := redisx.RunScript(ctx, b, r.Client, script, keys, "x").Int(); err != nil || n != 1 {
		t.Fatalf("script through the batcher on the cluster: %d, %v", n, err)
	}
	if err := r.Client.Del(ctx, r.Prefix+"redis-marker").Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if losses != 1 || h.Status().DataLostAt.IsZero() {
		t.Errorf("losses = %d, DataLostAt %v after the marker was lost; want 1", losses, h.Status().DataLostAt)
	}
}

// Keys of different merchants cannot share a script on a cluster: the
// reason every key of one script carries the same merchant tag.
func TestClusterRefusesCrossSlotScripts(t *testing.T) {
	r := redistest.Cluster(t)
	ctx := context.Background()
	script := redis.NewScript(`return redis.call("MGET", KEYS[1], KEYS[2])`)
	err := script.Run(ctx, r.Client, []string{r.Prefix + "a:{m1}", r.Prefix + "a:{m2}"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("script on two merchants' keys: %v, want CROSSSLOT", err)
	}
}
