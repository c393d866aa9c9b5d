package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// client returns a go-redis client for addr, closed when t ends.
func client(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestKillAndRestartKeepTheDataWithAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := Start(t, Options{AppendOnly: true})
	addr, pid := srv.Addr, srv.PID()
	if err := client(t, srv.Addr).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}

	if srv.Addr != addr || srv.PID() == pid {
		t.Fatalf("after Restart: addr %s pid %d, want addr %s and a new pid (was %d)", srv.Addr, srv.PID(), addr, pid)
	}
	got, err := client(t, srv.Addr).Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("GET k after Kill and Restart = %q, %v; want v", got, err)
	}
}

func TestKillAndRestartLoseTheDataWithoutAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := Start(t, Options{})
	if err := client(t, srv.Addr).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}

	if got, err := client(t, srv.Addr).Get(ctx, "k").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET k after Kill and Restart = %q, %v; want nil: nothing is kept", got, err)
	}
}

// notifyConn reports each write made once armed.
type notifyConn struct {
	net.Conn
	armed *atomic.Bool
	wrote chan<- struct{}
}

func (c *notifyConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.armed.Load() {
		select {
		case c.wrote <- struct{}{}:
		default:
		}
	}
	return n, err
}

func TestStallHoldsCommandsUntilResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := Start(t, Options{})

	var armed atomic.Bool
	wrote := make(chan struct{}, 1)
	held := redis.NewClient(&redis.Options{
		Addr:        srv.Addr,
		PoolSize:    1,
		ReadTimeout: 30 * time.Second,
		MaxRetries:  -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &notifyConn{Conn: c, armed: &armed, wrote: wrote}, nil
		},
	})
	t.Cleanup(func() { _ = held.Close() })
	if err := held.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	if err := srv.Stall(); err != nil {
		t.Fatal(err)
	}
	if !srv.Running() {
		t.Fatal("Running() = false for a stalled server, want true")
	}
	quick := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = quick.Close() })
	if err := quick.Ping(ctx).Err(); err == nil {
		t.Fatal("PING to a stalled server answered")
	}

	// Resume from another goroutine once the SET is in the socket.
	var resumeCalled atomic.Bool
	resumed := make(chan error, 1)
	armed.Store(true)
	go func() {
		select {
		case <-wrote:
		case <-time.After(10 * time.Second):
			resumed <- errors.New("the SET was not written within 10s")
			return
		}
		resumeCalled.Store(true)
		resumed <- srv.Resume()
	}()

	if err := held.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET sent during the stall: %v", err)
	}
	if !resumeCalled.Load() {
		t.Fatal("SET answered before Resume")
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if got, err := client(t, srv.Addr).Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v; want v", got, err)
	}
}

func TestKillTakesAStalledServerAsItIs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := Start(t, Options{AppendOnly: true, Fsync: "everysec"})
	c := client(t, srv.Addr)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stall(); err != nil {
		t.Fatal(err)
	}

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Fatal("Running() = true after Kill")
	}
	if err := srv.Resume(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Resume after Kill = %v, want ErrNotRunning", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v; want v", got, err)
	}
}

func TestRunningFollowsTheProcess(t *testing.T) {
	t.Parallel()
	srv := Start(t, Options{})
	if !srv.Running() {
		t.Fatal("Running() = false after Start")
	}
	if err := srv.Restart(); err == nil {
		t.Fatal("Restart of a running server succeeded, want an error")
	}

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Fatal("Running() = true after Kill")
	}
	if err := srv.Kill(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second Kill = %v, want ErrNotRunning", err)
	}
	if err := srv.Stall(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Stall after Kill = %v, want ErrNotRunning", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if !srv.Running() {
		t.Fatal("Running() = false after Restart")
	}
}

func TestURLNamesTheServer(t *testing.T) {
	t.Parallel()
	srv := Start(t, Options{})
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opts.Addr != srv.Addr || opts.DB != 0 {
		t.Fatalf("URL() = %s, want %s on database 0", srv.URL(), srv.Addr)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestNewAndCloseCleanUp(t *testing.T) {
	t.Parallel()
	if !Available() {
		t.Skip("redis-server is not on PATH")
	}
	srv, err := New(Options{AppendOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := client(t, srv.Addr).Ping(context.Background()).Err(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, logName)); err != nil {
		t.Errorf("the server's log: %v", err)
	}

	srv.Close()

	if srv.Running() {
		t.Error("Running() = true after Close")
	}
	if _, err := os.Stat(srv.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir after Close: %v, want it removed", err)
	}
	srv.Close() // a second Close does nothing
}

func TestStartFailureShowsTheLog(t *testing.T) {
	t.Parallel()
	if !Available() {
		t.Skip("redis-server is not on PATH")
	}
	// Bypass Options' check to have redis-server itself refuse to start.
	s := &Server{Dir: t.TempDir(), bin: binary, opts: Options{AppendOnly: true, Fsync: "sometimes"}}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.port, s.Addr = port, fmt.Sprintf("127.0.0.1:%d", port)

	_, err = s.launch()
	if err == nil || !strings.Contains(err.Error(), "appendfsync") {
		t.Fatalf("launch with a bad appendfsync = %v, want an error quoting redis-server's complaint", err)
	}
	if errors.Is(err, errPortTaken) {
		t.Fatalf("launch error %v says the port was taken", err)
	}
}

func TestRestartRetriesWhileThePortIsTaken(t *testing.T) {
	t.Parallel()
	srv := Start(t, Options{})
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		// Hold the port until Restart has failed to bind at least once.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(tail(filepath.Join(srv.Dir, logName), 0), "Address already in use") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		_ = l.Close()
		close(released)
	}()

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	<-released
	if err := client(t, srv.Addr).Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsRejectAnUnknownFsync(t *testing.T) {
	if _, err := New(Options{AppendOnly: true, Fsync: "sometimes"}); err == nil {
		t.Fatal("New with Fsync sometimes succeeded")
	}
}

// recordingTB records how Start gives up, standing in for a testing.T.
type recordingTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordingTB) Helper()               {}
func (r *recordingTB) Skip(...any)           { r.skipped = true; runtime.Goexit() }
func (r *recordingTB) Fatal(...any)          { r.failed = true; runtime.Goexit() }
func (r *recordingTB) Fatalf(string, ...any) { r.failed = true; runtime.Goexit() }

func TestStartWithoutTheBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, tc := range []struct {
		ci         string
		wantFailed bool
	}{
		{ci: "", wantFailed: false},
		{ci: "true", wantFailed: true},
	} {
		t.Setenv("CI", tc.ci)
		rec := &recordingTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Start(rec, Options{})
		}()
		<-done
		if rec.failed != tc.wantFailed || rec.skipped == tc.wantFailed {
			t.Errorf("CI=%q: skipped %v, failed %v; want failed %v", tc.ci, rec.skipped, rec.failed, tc.wantFailed)
		}
	}
}
