package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ChildLauncher starts each server as a child process of the same binary:
// the hub with `serve --config <generated>` and the floor relay with a
// hidden `bench --serve-floor` mode. Every server gets a key prefix of its
// own, removed from Redis when it stops.
type ChildLauncher struct {
	Exe        string // the termhub binary (os.Executable)
	RedisURL   string // "" runs each server on its own embedded Redis
	Dir        string // generated configurations and server logs
	Fleet      Fleet
	Tag        string // unique per run
	LogLevel   string // the hub's log_level
	CPUProfile string // where a profiled hub writes its CPU profile
	// Redis is a client of RedisURL for the clean-up; nil skips it.
	Redis redis.UniversalClient
	Log   io.Writer
}

func (l *ChildLauncher) prefix(name string) string { return "bench:" + l.Tag + ":" + name + ":" }

// Hub starts a hub. With profile, the hub runs under the bench's hidden
// `--serve-hub` mode, which profiles the CPU between SIGUSR1 and SIGUSR2
// into CPUProfile.
func (l *ChildLauncher) Hub(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	addr, err := FreeAddr()
	if err != nil {
		return Endpoint{}, nil, err
	}
	prefix := l.prefix(name)
	path := filepath.Join(l.Dir, "hub-"+name+".yaml")
	if err := os.WriteFile(path, l.Fleet.ConfigYAML(addr, l.RedisURL, prefix, l.LogLevel), 0o600); err != nil {
		return Endpoint{}, nil, err
	}
	args := []string{"serve", "--config", path}
	if profile {
		args = []string{"bench", "--serve-hub", path, "--cpuprofile", ProfilePath(l.CPUProfile, name)}
	}
	url := "http://" + addr
	start := time.Now()
	p, err := StartProc(ctx, l.Exe, args, childEnv(), filepath.Join(l.Dir, "hub-"+name+".log"), url)
	if err != nil {
		l.cleanup(prefix)
		return Endpoint{}, nil, err
	}
	fmt.Fprintf(l.Log, "bench: hub for %s: pid %d on %s, ready in %s, log %s\n", name, p.PID(), addr, time.Since(start).Round(time.Millisecond), p.LogPath)
	return Endpoint{Name: "hub", URL: url, Fleet: l.Fleet, Proc: p, OpsToken: opsToken(prefix)}, func() { p.Stop(); l.cleanup(prefix) }, nil
}

// Floor starts a floor relay. With profile, it profiles its CPU between
// SIGUSR1 and SIGUSR2 into CPUProfile with "-<name>" before the extension,
// as a profiled hub does.
func (l *ChildLauncher) Floor(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	addr, err := FreeAddr()
	if err != nil {
		return Endpoint{}, nil, err
	}
	prefix := l.prefix(name)
	args := []string{"bench", "--serve-floor", addr, "--redis", l.RedisURL, "--floor-prefix", prefix}
	if profile {
		args = append(args, "--cpuprofile", ProfilePath(l.CPUProfile, name))
	}
	url := "http://" + addr
	p, err := StartProc(ctx, l.Exe, args, childEnv(), filepath.Join(l.Dir, "floor-"+name+".log"), url)
	if err != nil {
		l.cleanup(prefix)
		return Endpoint{}, nil, err
	}
	fmt.Fprintf(l.Log, "bench: floor relay for %s: pid %d on %s\n", name, p.PID(), addr)
	return Endpoint{Name: "floor", URL: url, Fleet: l.Fleet, Proc: p}, func() { p.Stop(); l.cleanup(prefix) }, nil
}

// cleanup removes every key under prefix (at most 2 minutes' worth).
func (l *ChildLauncher) cleanup(prefix string) {
	if l.Redis == nil {
		return
	}
	n, err := DeletePrefix(context.Background(), l.Redis, prefix, 2*time.Minute)
	if err != nil {
		fmt.Fprintf(l.Log, "bench: cleaning up %s*: %v\n", prefix, err)
		return
	}
	if n > 0 {
		fmt.Fprintf(l.Log, "bench: removed %d keys under %s\n", n, prefix)
	}
}

// DeletePrefix unlinks every key under prefix, scanning 1,000 at a time,
// for at most limit. On a Redis Cluster each master is scanned (a SCAN
// sees one node's keys) and its keys are unlinked one command each in a
// pipeline: keys of different slots cannot share an UNLINK.
func DeletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string, limit time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return deletePrefixOn(ctx, rdb, prefix)
	}
	var total atomic.Int64
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		d, err := deletePrefixOn(ctx, n, prefix)
		total.Add(int64(d))
		return err
	})
	return int(total.Load()), err
}

// deletePrefixOn is DeletePrefix on one server.
func deletePrefixOn(ctx context.Context, rdb redis.Cmdable, prefix string) (int, error) {
	var cursor uint64
	n := 0
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return n, err
		}
		if len(keys) > 0 {
			pipe := rdb.Pipeline()
			for _, k := range keys {
				pipe.Unlink(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return n, err
			}
			n += len(keys)
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// FixedLauncher hands out servers that are already running: a hub given by
// URL (--hub-url) and, for the floor, a child relay.
type FixedLauncher struct {
	HubEndpoint Endpoint
	Floors      *ChildLauncher
}

// Hub returns the running hub; it is never profiled or stopped.
func (l *FixedLauncher) Hub(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	return l.HubEndpoint, func() {}, nil
}

// Floor starts a floor relay.
func (l *FixedLauncher) Floor(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	return l.Floors.Floor(ctx, name, profile)
}

// ProfilePath is where the hub of scenario name writes its CPU profile: base
// itself for the throughput run, base with "-<name>" before its extension
// for the others.
func ProfilePath(base, name string) string {
	if name == "throughput" {
		return base
	}
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "-" + name + ext
}
