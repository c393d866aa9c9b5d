package redisx_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/redisfault"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/internal/redisx"
)

// newHealth is a Health on a test Redis, with faults installed behind its
// gate (as the network is behind it), probed only when the test says.
func newHealth(t *testing.T, o redisx.HealthOptions) (*redisx.Health, *redistest.Redis, *redisfault.Faults) {
	t.Helper()
	r := redistest.New(t)
	o.Client, o.MarkerKey, o.Logger = r.Client, r.Prefix+"redis-marker", zerolog.Nop()
	h := redisx.NewHealth(o)
	t.Cleanup(h.Close)
	f := &redisfault.Faults{}
	r.Client.AddHook(f)
	return h, r, f
}

func check(t *testing.T, h *redisx.Health) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.Check(ctx)
}

// While the probe finds Redis down, commands fail at once with
// ErrUnavailable and never reach Redis; Ready's channel is closed again,
// and commands pass, once a probe finds it answering.
func TestHealthGateFailsFastWhileDown(t *testing.T) {
	var changes []bool
	h, r, f := newHealth(t, redisx.HealthOptions{OnChange: func(up bool) { changes = append(changes, up) }})
	ctx := context.Background()
	if err := check(t, h); err != nil || !h.Up() {
		t.Fatalf("first probe: %v, up %v", err, h.Up())
	}
	f.Stall()
	if err := check(t, h); err == nil || h.Up() {
		t.Fatalf("probe of a stalled Redis: %v, up %v", err, h.Up())
	}
	ready := h.Ready()
	select {
	case <-ready:
		t.Fatal("Ready is closed while Redis is down")
	default:
	}
	if err := r.Client.Set(ctx, r.Prefix+"k", "v", 0).Err(); !errors.Is(err, redisx.ErrUnavailable) {
		t.Fatalf("a command while down: %v, want ErrUnavailable", err)
	}
	pipe := r.Client.Pipeline()
	pipe.Set(ctx, r.Prefix+"p", "v", 0)
	if _, err := pipe.Exec(ctx); !errors.Is(err, redisx.ErrUnavailable) {
		t.Fatalf("a pipeline while down: %v, want ErrUnavailable", err)
	}
	if n := f.Resume(-1); n != 1 {
		t.Fatalf("%d commands reached the stalled Redis, want 1 (the probe's); the gate must send nothing", n)
	}
	if err := check(t, h); err != nil || !h.Up() {
		t.Fatalf("probe after the stall: %v, up %v", err, h.Up())
	}
	select {
	case <-ready:
	default:
		t.Fatal("Ready is not closed once Redis answers again")
	}
	if err := r.Client.Set(ctx, r.Prefix+"k", "v", 0).Err(); err != nil {
		t.Fatalf("a command once up: %v", err)
	}
	if len(changes) != 2 || changes[0] || !changes[1] {
		t.Fatalf("changes told %v, want [false true]", changes)
	}
	st := h.Status()
	if !st.Up || st.Error != "" {
		t.Fatalf("status %+v", st)
	}
}

// A command that fails for want of an answer makes the running Health
// probe at once, without waiting for its interval.
func TestHealthProbesAtOnceWhenACommandFails(t *testing.T) {
	h, r, f := newHealth(t, redisx.HealthOptions{Interval: time.Hour})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.Stall()
	_ = r.Client.Get(context.Background(), r.Prefix+"k").Err()
	deadline := time.Now().Add(5 * time.Second)
	for h.Up() {
		if time.Now().After(deadline) {
			t.Fatal("still up 5 s after a command timed out, with probes an hour apart")
		}
		time.Sleep(5 * time.Millisecond) // polling the probe's goroutine
	}
	f.Resume(0)
}

// A Redis that answers without the marker, or with another one, lost its
// data: it is told (once per loss), Status says when, and the marker is
// written again to watch for the next one.
func TestHealthReportsARedisThatLostItsData(t *testing.T) {
	losses := 0
	h, r, _ := newHealth(t, redisx.HealthOptions{OnDataLoss: func() { losses++ }})
	ctx := context.Background()
	if err := check(t, h); err != nil {
		t.Fatal(err)
	}
	if losses != 0 || !h.Status().DataLostAt.IsZero() {
		t.Fatalf("a fresh Redis reported as a loss (%d)", losses)
	}
	if err := check(t, h); err != nil || losses != 0 {
		t.Fatalf("second probe: %v, %d losses", err, losses)
	}
	r.Client.Del(ctx, r.Prefix+"redis-marker") // as after a restart without persistence
	if err := check(t, h); err != nil || losses != 1 || h.Status().DataLostAt.IsZero() {
		t.Fatalf("probe of an emptied Redis: %v, %d losses, status %+v", err, losses, h.Status())
	}
	if v, err := r.Client.Get(ctx, r.Prefix+"redis-marker").Result(); err != nil || v == "" {
		t.Fatalf("marker not written again: %q %v", v, err)
	}
	if err := check(t, h); err != nil || losses != 1 {
		t.Fatalf("a probe after the loss reported again: %d losses", losses)
	}
	r.Client.Set(ctx, r.Prefix+"redis-marker", "another", 0) // replaced by another Redis's data
	if err := check(t, h); err != nil || losses != 2 {
		t.Fatalf("a changed marker: %v, %d losses, want 2", err, losses)
	}
}

// A closed Health's gate lets everything through: an App built again on
// the same client must not be held by the one it replaced.
func TestClosedHealthLetsCommandsThrough(t *testing.T) {
	h, r, f := newHealth(t, redisx.HealthOptions{})
	f.Stall()
	_ = check(t, h)
	f.Resume(0)
	h.Close()
	if err := r.Client.Set(context.Background(), r.Prefix+"k", "v", 0).Err(); err != nil {
		t.Fatalf("a command after Close: %v", err)
	}
}

// Outage tells Redis not answering from Redis answering.
func TestOutage(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false}, {redis.Nil, false}, {context.Canceled, false}, {errors.New("decode: unexpected end"), false},
		{redisx.ErrUnavailable, true}, {redisx.ErrNoAnswer, true}, {context.DeadlineExceeded, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{io.EOF, true}, {redis.ErrClosed, true}, {redis.ErrPoolTimeout, true},
	} {
		if got := redisx.Outage(c.err); got != c.want {
			t.Errorf("Outage(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	r := redistest.New(t)
	err := r.Client.Do(context.Background(), "nosuchcommand").Err()
	if err == nil || redisx.Outage(err) || redisx.Refused(err) {
		t.Errorf("Outage or Refused of Redis's own error %v = true, want false", err)
	}
	r.Client.Set(context.Background(), r.Prefix+"s", "x", 0)
	err = r.Client.Incr(context.Background(), r.Prefix+"s").Err()
	if err == nil || redisx.Outage(err) {
		t.Errorf("Outage of %v = true, want false (Redis answered)", err)
	}
}

// redisErr is an error reply as Redis sends it (redis.Error).
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

// Refused tells Redis refusing a command before running it from Redis
// answering with an error.
func TestRefused(t *testing.T) {
	for _, msg := range []string{"LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script",
		"READONLY You can't write against a read only replica.", "OOM command not allowed when used memory > 'maxmemory'.",
		"MASTERDOWN Link with MASTER is down", "NOREPLICAS Not enough good replicas to write.", "NOSCRIPT No matching script.",
		"MOVED 3999 127.0.0.1:7002", "ASK 3999 127.0.0.1:7002"} {
		if err := redisErr(msg); !redisx.Refused(err) || !redisx.Outage(err) {
			t.Errorf("%q: Refused %v, Outage %v; want both", msg, redisx.Refused(err), redisx.Outage(err))
		}
	}
	for _, msg := range []string{"WRONGTYPE Operation against a key holding the wrong kind of value", "ERR commit: unknown op x", "LOADINGX"} {
		if err := redisErr(msg); redisx.Refused(err) || redisx.Outage(err) {
			t.Errorf("%q: Refused %v, Outage %v; want neither", msg, redisx.Refused(err), redisx.Outage(err))
		}
	}
}
