// Package webhook delivers the engine's webhook events (docs/webhooks.md) to
// each merchant's webhook_url, durably and at least once.
//
// The engine appends every event to the merchant's Redis stream
// (keys.Webhooks) in the same atomic commit as the final state it reports.
// A Sender reads those streams with a consumer group and keeps the delivery
// schedule in Redis too:
//
//   - keys.WebhookRetry(m): a sorted set of the stream entries not yet
//     delivered, scored by the time of their next attempt;
//   - keys.WebhookState(m): per entry, the attempts so far (for the backoff
//     and for ops);
//   - keys.WebhookStats(m): hourly counters of deliveries and give-ups.
//
// An entry stays pending in the consumer group until it is delivered or
// given up, and is then acknowledged and deleted from the stream. Whatever a
// hub was doing when it died is found again: its pending entries are re-read
// at start (XREADGROUP from "0"), entries another consumer read but never
// scheduled are claimed (XAUTOCLAIM), and the schedule itself is in Redis, so
// retries resume at the right time. Several hubs may share one Redis: an
// attempt first takes a lease on its entry, so one event is never attempted
// by two of them at once.
//
// Every wait (retries, backoff, the periodic sweep) goes through the
// injectable clock, so tests run 24 hours of retries on clock.Fake at once.
package webhook

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/metrics"
)

// Defaults of Options (docs/configuration.md, docs/webhooks.md).
const (
	DefaultRetryBase    = 5 * time.Second
	DefaultMaxDelay     = time.Hour
	DefaultMaxAge       = 24 * time.Hour
	DefaultJitter       = 0.2
	DefaultTimeout      = 10 * time.Second
	DefaultGroup        = "termhub"
	DefaultReadBlock    = time.Second
	DefaultClaimMinIdle = time.Minute
	DefaultSweepEvery   = time.Minute
	DefaultConcurrency  = 4
)

// streamField is the field of a webhook stream entry that holds the event
// JSON (session's commit writes XADD key * m <json>).
const streamField = "m"

// Options configure a Sender. Zero values take the defaults above.
type Options struct {
	Redis   redis.UniversalClient
	Keys    keys.Space
	Clock   clock.Clock
	Logger  zerolog.Logger
	Metrics *metrics.Metrics // nil records nothing

	// Directory returns the merchants in force; each attempt reads the
	// merchant's webhook_url and webhook_secret from it, so a reload takes
	// effect at the next attempt.
	Directory func() *config.Directory

	RetryBase time.Duration  // first retry delay (webhook_retry_base); doubles per attempt
	MaxDelay  time.Duration  // cap of the retry delay
	MaxAge    time.Duration  // no retry later than this after the event's createdAt
	Jitter    float64        // ± fraction of each retry delay (0.2: ±20%); negative for none
	Rand      func() float64 // uniform in [0,1), for the jitter; math/rand/v2 when nil
	Timeout   time.Duration  // per attempt: no answer within it is a failure
	// Client sends the POSTs. When nil, a client that never follows a
	// redirect (a 3xx is a failure) is used.
	Client *http.Client

	Group    string // consumer group name
	Consumer string // this hub's consumer name; the host name when empty
	// Poll, when positive, makes each merchant's worker look at the
	// delivery schedule at least this often. With several nodes, an entry
	// another node put on the schedule and could not attempt (it was
	// draining) is otherwise seen only when this node next has a reason to
	// look. 0: never without a reason (a lone hub knows its schedule).
	Poll time.Duration
	// ReadBlock is how long one XREADGROUP waits for new events. Each
	// merchant with webhooks has one reader goroutine, which holds one
	// connection of the pool while it waits.
	ReadBlock time.Duration
	// ClaimMinIdle: entries another consumer read at least this long ago and
	// never scheduled are claimed by the sweep (a hub that died right after
	// reading them).
	ClaimMinIdle time.Duration
	// SweepEvery is how often each merchant's schedule is re-read (entries
	// scheduled by other hubs) and abandoned entries are claimed.
	SweepEvery  time.Duration
	Concurrency int // attempts in flight at once per merchant

	// onAttempt, for tests, is told the result of every attempt once its
	// outcome is stored and its retry timer armed.
	onAttempt func(merchantID string, d Delivery, result string)
}

func (o *Options) fill() {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Directory == nil {
		empty := config.NewDirectory(config.Config{})
		o.Directory = func() *config.Directory { return empty }
	}
	if o.RetryBase <= 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	switch {
	case o.Jitter == 0 || o.Jitter >= 1:
		o.Jitter = DefaultJitter
	case o.Jitter < 0:
		o.Jitter = 0
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Client == nil {
		o.Client = NewHTTPClient()
	}
	if o.Group == "" {
		o.Group = DefaultGroup
	}
	if o.Consumer == "" {
		o.Consumer, _ = os.Hostname()
		if o.Consumer == "" {
			o.Consumer = "termhub"
		}
	}
	if o.ReadBlock <= 0 {
		o.ReadBlock = DefaultReadBlock
	}
	if o.ClaimMinIdle < 0 {
		o.ClaimMinIdle = 0
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = DefaultSweepEvery
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
}

// NewHTTPClient returns the client webhooks are sent with: it never follows
// a redirect (the 3xx answer itself is returned, and counts as a failure).
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = DefaultConcurrency
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Sender delivers webhook events. Build it with New, run it with Start and
// stop it with Close.
type Sender struct {
	opts   Options
	rdb    redis.UniversalClient
	clock  clock.Clock
	log    zerolog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
	workers map[string]*worker // by merchant id; guarded by mu
	wg      sync.WaitGroup     // readers and timer callbacks in flight
}

// New builds a Sender; nothing runs before Start.
func New(opts Options) *Sender {
	opts.fill()
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{
		opts: opts, rdb: opts.Redis, clock: opts.Clock, log: opts.Logger.With().Str("component", "webhooks").Logger(),
		ctx: ctx, cancel: cancel, workers: map[string]*worker{},
	}
}

// Start recovers every merchant's unfinished deliveries (entries this hub
// had read, entries abandoned by a dead hub, the retry schedule) and starts
// reading new events. It serves every merchant with a webhook_url and every
// merchant that still has deliveries queued from before.
func (s *Sender) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.started = true
	s.mu.Unlock()
	return s.refresh(ctx)
}

// Refresh starts serving merchants that gained a webhook_url (call it after
// a configuration reload). Merchants that lost theirs keep being served until
// their queued deliveries are done or given up.
func (s *Sender) Refresh(ctx context.Context) error {
	s.mu.Lock()
	started := s.started && !s.closed
	s.mu.Unlock()
	if !started {
		return nil
	}
	return s.refresh(ctx)
}

func (s *Sender) refresh(ctx context.Context) error {
	dir := s.opts.Directory()
	var errs []error
	for _, m := range dir.MerchantIDs() {
		s.mu.Lock()
		running := s.workers[m] != nil
		s.mu.Unlock()
		if running {
			continue
		}
		if mc, ok := dir.Merchant(m); !ok || mc.WebhookURL == "" {
			queued, err := s.queued(ctx, m)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !queued {
				continue
			}
		}
		if err := s.startWorker(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// queued reports whether a merchant has webhook events waiting in Redis.
func (s *Sender) queued(ctx context.Context, m string) (bool, error) {
	ks := s.opts.Keys
	n, err := s.rdb.Exists(ctx, ks.WebhookRetry(m)).Result()
	if err != nil || n > 0 {
		return n > 0, err
	}
	l, err := s.rdb.XLen(ctx, ks.Webhooks(m)).Result()
	return l > 0, err
}

func (s *Sender) startWorker(ctx context.Context, m string) error {
	s.mu.Lock()
	if s.closed || s.workers[m] != nil {
		s.mu.Unlock()
		return nil
	}
	w := newWorker(s, m)
	s.workers[m] = w
	s.mu.Unlock()
	if err := w.recover(ctx); err != nil {
		s.mu.Lock()
		delete(s.workers, m)
		s.mu.Unlock()
		return err
	}
	if !s.track() {
		return nil
	}
	go func() {
		defer s.wg.Done()
		w.readLoop()
	}()
	w.armSweep()
	return nil
}

// track registers a goroutine or timer callback that Close must wait for;
// false once closed.
func (s *Sender) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Close stops reading and retrying and waits for attempts in flight (they
// are cancelled and left due, not counted) and for the readers (at most
// ReadBlock). Deliveries not done stay queued in Redis for the next start.
func (s *Sender) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.cancel()
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.stopTimers()
	}
	s.wg.Wait()
}

// merchants returns the merchants being served.
func (s *Sender) merchants() map[string]*worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*worker, len(s.workers))
	for m, w := range s.workers {
		out[m] = w
	}
	return out
}

// endpoint returns the merchant's webhook URL and secret as configured now.
func (s *Sender) endpoint(m string) (url, secret string) {
	mc, ok := s.opts.Directory().Merchant(m)
	if !ok {
		return "", ""
	}
	return mc.WebhookURL, mc.WebhookSecret
}

// isNoGroup reports a Redis NOGROUP error (the stream or group was deleted).
func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }
