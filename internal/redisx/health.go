package redisx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// ErrUnavailable is the error of a command that was never sent: Redis is
// known not to answer (Health's gate is closed), or the caller's deadline
// passed while it waited for its turn (Batcher). Nothing of it reached
// Redis, so, unlike a timeout, its outcome is known: it did not happen.
var ErrUnavailable = errors.New("redis: unavailable (command not sent)")

// Outage reports whether err means Redis could not serve a command: it is
// stalled, restarting, unreachable, or refusing work while it loads, fails
// over or is out of memory or replicas. Anything else — a reply Redis
// chose to give (WRONGTYPE, a script's own error, redis.Nil), a caller
// that gave up (context.Canceled), a bug — is not.
func Outage(err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNoAnswer), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || Refused(err)
}

// Refused reports whether err is Redis refusing a command before running
// any of it: while it loads its data, is busy with a script, fails over,
// is out of memory or of replicas, or cannot persist. Nothing of the
// command was applied.
func Refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	// MOVED and ASK: a Redis Cluster node that does not (or no longer)
	// serve the key's slot; the client follows no redirect
	// (redisopts.ConfigureCluster) but reloads its slot map.
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM",
		"NOREPLICAS", "MISCONF", "NOSCRIPT", "MOVED", "ASK"} {
		if strings.HasPrefix(msg, p+" ") || msg == p {
			return true
		}
	}
	return false
}

// HealthOptions configure a Health.
type HealthOptions struct {
	// Client is the hub's Redis client; NewHealth installs its gate on it.
	Client redis.UniversalClient
	// MarkerKey holds the token that tells a Redis that lost its data
	// (keys.Space.Marker).
	MarkerKey string
	// Interval is the time between two probes (500 ms when zero); a
	// failed command triggers one at once.
	Interval time.Duration
	// Timeout bounds one probe (1 s when zero). Interval + Timeout is how
	// long a stall goes unnoticed at most.
	Timeout time.Duration
	// Logger reports outages, recoveries and data loss.
	Logger zerolog.Logger
	// OnChange, if set, is told every change between up and down. It is
	// called with the Health's lock held: it must not block or call the
	// Health.
	OnChange func(up bool)
	// OnDataLoss, if set, is told when Redis answers again without the
	// data it had (restarted with no persistence, or replaced).
	OnDataLoss func()
}

// Health knows whether Redis answers. A probe reads the marker key every
// Interval; a command that fails for want of an answer triggers a probe at
// once. While the last probe failed, the gate it installs on the client
// fails every command at once with ErrUnavailable instead of sending it,
// so that requests during an outage are answered 503 at once rather than
// each waiting out its timeout, and no commit is left in a stalled Redis's
// buffers to be applied later by surprise. The probes themselves pass.
//
// Probes and retries run on the wall clock: they measure how Redis
// behaves in real time, not the protocol's timers.
type Health struct {
	o      HealthOptions
	up     atomic.Bool
	closed atomic.Bool   // the gate lets everything through: this Health no longer watches
	now    chan struct{} // asks the loop for a probe at once
	start  sync.Once     // of the loop
	stop   sync.Once
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when the loop has ended (or never started)

	probe sync.Mutex // one probe at a time
	token string     // the marker's value as this hub knows it; "" before the first probe; guarded by probe

	mu         sync.Mutex    // guards what follows; never held across I/O
	ready      chan struct{} // closed while up; a fresh one while down
	since      time.Time     // of the last change between up and down
	lastErr    string        // why the last failed probe failed
	dataLostAt time.Time     // when a data loss was last detected
}

// HealthStatus is what /readyz reports about Redis.
type HealthStatus struct {
	Up    bool
	Since time.Time // of the last change between up and down
	// Error is why the last probe failed, while down.
	Error string
	// DataLostAt is when this hub last found Redis without its data (zero
	// if never).
	DataLostAt time.Time
}

type probeKey struct{}

// NewHealth installs the gate on o.Client and returns the Health, up.
// Start begins probing.
func NewHealth(o HealthOptions) *Health {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	h := &Health{o: o, quit: make(chan struct{}), now: make(chan struct{}, 1), done: make(chan struct{}),
		ready: make(chan struct{}), since: time.Now()}
	close(h.ready)
	h.up.Store(true)
	o.Client.AddHook(gate{h})
	return h
}

// Start probes once (so the marker is read or written before the hub
// serves) and then every Interval until Close.
func (h *Health) Start(ctx context.Context) error {
	err := h.Check(ctx)
	h.start.Do(func() { go h.loop() })
	return err
}

// Close stops the probes and waits for the one in flight.
func (h *Health) Close() {
	h.closed.Store(true)
	h.stop.Do(func() { close(h.quit) })
	h.start.Do(func() { close(h.done) }) // never started: nothing to wait for
	<-h.done
}

// Up reports whether Redis answered the last probe.
func (h *Health) Up() bool { return h.up.Load() }

// Ready returns a channel that is closed while Redis is up: at once when it
// is up now, else when a probe next finds it answering.
func (h *Health) Ready() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}

// Status returns the state /readyz reports.
func (h *Health) Status() HealthStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HealthStatus{Up: h.up.Load(), Since: h.since, DataLostAt: h.dataLostAt}
	if !s.Up {
		s.Error = h.lastErr
	}
	return s
}

// Suspect asks for a probe at once: a command just failed in a way that
// suggests Redis does not answer.
func (h *Health) Suspect() {
	select {
	case h.now <- struct{}{}:
	default: // one is asked for already
	}
}

func (h *Health) loop() {
	defer close(h.done)
	t := time.NewTimer(h.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
		case <-h.now:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.o.Timeout)
		_ = h.Check(ctx)
		cancel()
		t.Reset(h.o.Interval)
	}
}

// Check probes Redis now: it reads the marker (writing it on the first
// probe of a Redis that has none), updates up or down, and reports a data
// loss when the marker is gone or changed.
func (h *Health) Check(ctx context.Context) error {
	h.probe.Lock()
	defer h.probe.Unlock()
	ctx = context.WithValue(ctx, probeKey{}, true)
	v, err := h.readMarker(ctx)
	if err == nil {
		err = h.pingMasters(ctx)
	}
	if err == nil && (v == "" || h.token != "" && v != h.token) {
		lost := h.token != ""
		if v == "" {
			v, err = h.writeMarker(ctx)
		}
		if err == nil && lost {
			h.mu.Lock()
			h.dataLostAt = time.Now()
			h.mu.Unlock()
			h.o.Logger.Error().Str("marker", h.o.MarkerKey).
				Msg("Redis answers without the data it had (restarted without persistence, or replaced): transactions, undelivered messages and deadlines written before are gone; see docs/ops.md")
			if h.o.OnDataLoss != nil {
				h.o.OnDataLoss()
			}
		}
	}
	if err == nil {
		h.token = v
	}
	h.set(err)
	return err
}

// pingMasters pings every master of a Redis Cluster (nothing for one
// server): the marker lives in one slot, on one shard, and a shard that
// does not answer leaves its merchants without their data just the same.
// Redis is down, and the gate closed, until every master answers.
func (h *Health) pingMasters(ctx context.Context) error {
	cc, ok := h.o.Client.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		if err := n.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("master %s: %w", n.Options().Addr, err)
		}
		return nil
	})
}

func (h *Health) readMarker(ctx context.Context) (string, error) {
	v, err := h.o.Client.Get(ctx, h.o.MarkerKey).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// writeMarker sets a new token unless another hub set one meanwhile, and
// returns the one in force.
func (h *Health) writeMarker(ctx context.Context) (string, error) {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	if err := h.o.Client.SetNX(ctx, h.o.MarkerKey, hex.EncodeToString(b), 0).Err(); err != nil {
		return "", err
	}
	return h.readMarker(ctx)
}

// set records a probe's outcome, telling the change if there is one.
func (h *Health) set(err error) {
	up := err == nil
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr = err.Error()
	}
	if h.up.Load() == up {
		return
	}
	h.up.Store(up)
	h.since = time.Now()
	if up {
		close(h.ready)
		h.o.Logger.Info().Msg("Redis answers again")
	} else {
		h.ready = make(chan struct{})
		h.o.Logger.Warn().Err(err).Msg("Redis does not answer: requests that need it are answered 503 until it does")
	}
	if h.o.OnChange != nil {
		h.o.OnChange(up)
	}
}

// gate is the hook NewHealth installs: while Redis is down, commands fail
// at once with ErrUnavailable; a command that fails for want of an answer
// asks for a probe.
type gate struct{ h *Health }

// closed reports whether the gate refuses commands: Redis is down and the
// Health still watches it.
func (g gate) closed() bool { return !g.h.up.Load() && !g.h.closed.Load() }

func (g gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if g.closed() && ctx.Value(probeKey{}) == nil {
			cmd.SetErr(ErrUnavailable)
			return ErrUnavailable
		}
		err := next(ctx, cmd)
		if err != nil && Outage(err) && ctx.Value(probeKey{}) == nil {
			g.h.Suspect()
		}
		return err
	}
}

func (g gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if g.closed() && ctx.Value(probeKey{}) == nil {
			for _, c := range cmds {
				c.SetErr(ErrUnavailable)
			}
			return ErrUnavailable
		}
		err := next(ctx, cmds)
		if ctx.Value(probeKey{}) != nil {
			return err
		}
		for _, c := range cmds {
			if e := c.Err(); e != nil && Outage(e) {
				g.h.Suspect()
				break
			}
		}
		if err != nil && Outage(err) {
			g.h.Suspect()
		}
		return err
	}
}
