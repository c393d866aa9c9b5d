package faultproxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redisproc"
)

// setup runs a private Redis behind a proxy and returns the proxy and a
// client that talks to Redis directly.
func setup(t *testing.T) (*Proxy, *redis.Client) {
	t.Helper()
	srv := redisproc.Start(t, redisproc.Options{})
	return Start(t, srv.Addr), client(t, srv.Addr, 0)
}

// client returns a client for addr that does not retry, so each failure
// shows, with a read timeout if readTimeout is not 0.
func client(t *testing.T, addr string, readTimeout time.Duration) *redis.Client {
	t.Helper()
	opts := &redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, PoolSize: 1}
	if readTimeout > 0 {
		opts.ReadTimeout = readTimeout
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls f until it succeeds, failing t after a deadline.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after 5s", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestLatencyDelaysEachDirection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, _ := setup(t)
	c := client(t, p.Addr, 0)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	p.Latency(10*time.Millisecond, 10*time.Millisecond)
	up, down := 60*time.Millisecond, 40*time.Millisecond
	p.Latency(up, down)

	if n := len(p.proxy.Toxics.GetToxicArray()); n != 2 {
		t.Fatalf("%d toxics after calling Latency twice, want 2", n)
	}
	if got := p.proxy.Toxics.GetToxic(latencyUp).Toxic.(*toxics.LatencyToxic).Latency; got != 60 {
		t.Fatalf("upstream latency %d ms, want the second call's 60", got)
	}
	start := time.Now()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < up+down {
		t.Fatalf("PING took %v with latency %v up and %v down", elapsed, up, down)
	}

	p.Latency(0, 0)
	if n := len(p.proxy.Toxics.GetToxicArray()); n != 0 {
		t.Fatalf("%d toxics after Latency(0, 0), want none", n)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestDropRepliesExecutesCommandsButLosesReplies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, direct := setup(t)
	c := client(t, p.Addr, 300*time.Millisecond)
	if err := c.Ping(ctx).Err(); err != nil { // open the connection first
		t.Fatal(err)
	}

	p.DropReplies()
	p.DropReplies()
	if n := len(p.proxy.Toxics.GetToxicArray()); n != 1 {
		t.Fatalf("%d toxics after calling DropReplies twice, want 1", n)
	}

	// A timeout, not EOF or a reset: the connection stays open.
	if err := c.Set(ctx, "k", "v", 0).Err(); !isTimeout(err) {
		t.Fatalf("SET through the proxy = %v, want a read timeout", err)
	}
	eventually(t, "GET k directly", func() error {
		got, err := direct.Get(ctx, "k").Result()
		if err == nil && got != "v" {
			err = errors.New("k = " + got)
		}
		return err
	})

	p.Clear()
	eventually(t, "PING through the proxy after Clear", func() error { return c.Ping(ctx).Err() })
}

func TestResetAfterResetsNewConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, direct := setup(t)
	d := 50 * time.Millisecond
	p.ResetAfter(time.Second)
	p.ResetAfter(d)
	if n := len(p.proxy.Toxics.GetToxicArray()); n != 1 {
		t.Fatalf("%d toxics after calling ResetAfter twice, want 1", n)
	}

	// go-redis reports a reset during its handshake as EOF: a bare
	// connection shows the RST itself.
	conn, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("SET k v\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after SET through the proxy = %d bytes, %v; want a connection reset", n, err)
	}
	if elapsed := time.Since(start); elapsed < d {
		t.Fatalf("reset after %v, want at least %v", elapsed, d)
	}

	c := client(t, p.Addr, 10*time.Second)
	err = c.Set(ctx, "k", "v", 0).Err()
	var redisErr redis.Error
	if err == nil || isTimeout(err) || errors.As(err, &redisErr) {
		t.Fatalf("SET through the proxy with go-redis = %v, want a connection error", err)
	}
	if got, err := direct.Get(ctx, "k").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET k directly = %q, %v; want nil: the commands were discarded", got, err)
	}

	p.Clear()
	eventually(t, "SET through the proxy after Clear", func() error { return c.Set(ctx, "k", "v", 0).Err() })
}

func TestResetAfterClosesOpenConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, _ := setup(t)
	c := client(t, p.Addr, 10*time.Second)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	p.ResetAfter(0)

	if err := c.Ping(ctx).Err(); err == nil || isTimeout(err) {
		t.Fatalf("PING on an open connection = %v, want a connection error", err)
	}
}

func TestCutRefusesAndRestoreBringsServiceBack(t *testing.T) {
	t.Parallel()
	p, _ := setup(t)
	open, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	_ = open.SetDeadline(time.Now().Add(10 * time.Second))
	reply := make([]byte, 64)
	if _, err := open.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := open.Read(reply); err != nil || string(reply[:n]) != "+PONG\r\n" {
		t.Fatalf("PING through the proxy = %q, %v", reply[:n], err)
	}

	p.Cut()

	if n, err := open.Read(reply); err == nil {
		t.Fatalf("read on a connection open before Cut = %q, want it closed", reply[:n])
	}
	if conn, err := net.Dial("tcp", p.Addr); !errors.Is(err, syscall.ECONNREFUSED) {
		if conn != nil {
			_ = conn.Close()
		}
		t.Fatalf("dial after Cut = %v, want connection refused", err)
	}

	p.Restore()
	p.Restore()
	if err := client(t, p.Addr, 0).Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING after Restore: %v", err)
	}
}

func TestClearRemovesEveryToxic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, _ := setup(t)
	p.Latency(time.Second, time.Second)
	p.DropReplies()
	p.ResetAfter(0)

	p.Clear()

	if n := len(p.proxy.Toxics.GetToxicArray()); n != 0 {
		t.Fatalf("%d toxics after Clear, want none", n)
	}
	if err := client(t, p.Addr, 0).Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestURLNamesTheProxy(t *testing.T) {
	t.Parallel()
	p, _ := setup(t)
	opts, err := redis.ParseURL(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opts.Addr != p.Addr || opts.DB != 0 {
		t.Fatalf("URL() = %s, want %s on database 0", p.URL(), p.Addr)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}
