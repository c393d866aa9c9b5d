package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/clock"
)

// batch is how many entries one read, claim or pass handles at a time.
const batch = 100

// worker serves one merchant: it reads the merchant's stream, schedules
// each new entry, and runs passes that attempt every due entry.
type worker struct {
	s                           *Sender
	m                           string
	stream, retry, state, stats string

	pass sync.Mutex // one pass at a time (passes from the reader and from timers queue here)

	mu         sync.Mutex // guards the timers
	timer      clock.Timer
	timerAt    time.Time
	sweepTimer clock.Timer
	stopped    bool
}

func newWorker(s *Sender, m string) *worker {
	ks := s.opts.Keys
	return &worker{s: s, m: m, stream: ks.Webhooks(m), retry: ks.WebhookRetry(m), state: ks.WebhookState(m), stats: ks.WebhookStats(m)}
}

// ---- reading and scheduling ----

// ensureGroup creates the consumer group at the start of the stream, so that
// events added before any hub read them are delivered too.
func (w *worker) ensureGroup(ctx context.Context) error {
	err := w.s.rdb.XGroupCreateMkStream(ctx, w.stream, w.s.opts.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}

// recover brings back what a previous run left: this consumer's pending
// entries (read, maybe never scheduled), entries abandoned by other
// consumers, and the retry timer for the schedule kept in Redis.
func (w *worker) recover(ctx context.Context) error {
	if err := w.ensureGroup(ctx); err != nil {
		return err
	}
	// This consumer's pending entries, oldest first.
	after := "0"
	for {
		res, err := w.s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: w.s.opts.Group, Consumer: w.s.opts.Consumer, Streams: []string{w.stream, after}, Count: batch, Block: -1,
		}).Result()
		if errors.Is(err, redis.Nil) {
			break
		}
		if err != nil {
			return err
		}
		if len(res) == 0 || len(res[0].Messages) == 0 {
			break
		}
		msgs := res[0].Messages
		if err := w.schedule(ctx, msgs); err != nil {
			return err
		}
		after = msgs[len(msgs)-1].ID
		if len(msgs) < batch {
			break
		}
	}
	if err := w.claim(ctx); err != nil {
		return err
	}
	return w.rearm(ctx, time.Time{})
}

// claim takes over entries other consumers read at least ClaimMinIdle ago
// and schedules those that are not scheduled yet (their reader died before
// it could). Entries already scheduled only change owner, which is harmless:
// attempts are driven by the schedule, not by ownership.
func (w *worker) claim(ctx context.Context) error {
	start := "0-0"
	for range 10000 {
		ids, next, err := w.s.rdb.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
			Stream: w.stream, Group: w.s.opts.Group, Consumer: w.s.opts.Consumer,
			MinIdle: w.s.opts.ClaimMinIdle, Start: start, Count: batch,
		}).Result()
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			if err := w.scheduleIDs(ctx, ids); err != nil {
				return err
			}
		}
		if next == "" || next == "0-0" {
			return nil
		}
		start = next
	}
	return nil
}

// scheduleIDs schedules the entries among ids that are not scheduled yet.
func (w *worker) scheduleIDs(ctx context.Context, ids []string) error {
	scores, err := w.s.rdb.ZMScore(ctx, w.retry, ids...).Result()
	if err != nil {
		return err
	}
	pipe := w.s.rdb.Pipeline()
	var cmds []*redis.XMessageSliceCmd
	for i, id := range ids {
		if i < len(scores) && scores[i] != 0 {
			continue // scheduled (a score is a time in ms, never 0)
		}
		cmds = append(cmds, pipe.XRange(ctx, w.stream, id, id))
	}
	if len(cmds) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	var msgs []redis.XMessage
	for _, c := range cmds {
		msgs = append(msgs, c.Val()...)
	}
	return w.schedule(ctx, msgs)
}

// schedule puts read entries on the schedule, due now, unless they are on it
// already. An entry whose event was deleted from the stream is acknowledged.
func (w *worker) schedule(ctx context.Context, msgs []redis.XMessage) error {
	now := msNow(w.s.clock)
	for _, msg := range msgs {
		body, ok := msg.Values[streamField].(string)
		if !ok {
			// Deleted while pending (or not an event): nothing to deliver.
			if err := w.forget(ctx, msg.ID); err != nil {
				return err
			}
			continue
		}
		st := newState(msg.ID, body)
		st.NextAttemptAt = now
		data, _ := json.Marshal(st)
		if err := scheduleScript.Run(ctx, w.s.rdb, []string{w.retry, w.state, w.stream}, msg.ID, now.UnixMilli(), data).Err(); err != nil {
			return err
		}
	}
	return nil
}

// readLoop reads new events until Close and attempts them at once.
func (w *worker) readLoop() {
	ctx := w.s.ctx
	w.runPass() // whatever fell due while no hub ran
	for ctx.Err() == nil {
		// Not cancelled by Close: a read cut short after Redis handed it
		// entries would leave them pending for this consumer, unscheduled,
		// until a sweep claims them a minute later. Close waits for it
		// (ReadBlock at most) and what it read is scheduled.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.s.opts.ReadBlock+w.s.opts.Timeout)
		res, err := w.s.rdb.XReadGroup(rctx, &redis.XReadGroupArgs{
			Group: w.s.opts.Group, Consumer: w.s.opts.Consumer, Streams: []string{w.stream, ">"},
			Count: batch, Block: w.s.opts.ReadBlock,
		}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			continue // nothing new within ReadBlock
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				err = w.ensureGroup(ctx)
			}
			if err != nil {
				w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("reading webhook events failed; trying again")
			}
			w.pause(ctx, time.Second)
			continue
		}
		var msgs []redis.XMessage
		for _, st := range res {
			msgs = append(msgs, st.Messages...)
		}
		if len(msgs) == 0 {
			continue
		}
		if ctx.Err() != nil {
			// Closing: schedule what was read, for any node to attempt.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := w.schedule(sctx, msgs); err != nil {
				w.s.log.Warn().Err(err).Str("merchantId", w.m).Msg("could not schedule the webhook events read while closing; a sweep claims them")
			}
			cancel()
			return
		}
		if err := w.schedule(ctx, msgs); err != nil {
			if ctx.Err() == nil {
				// They stay pending for this consumer: the sweep (or the next
				// start) schedules them.
				w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("scheduling webhook events failed")
			}
			continue
		}
		w.runPass()
	}
}

// pause waits d of wall time after a Redis error (not a webhook retry: the
// reader must keep going even while a test's fake clock stands still).
func (w *worker) pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ---- passes ----

// runPass attempts every entry that is due, then arms the timer for the next
// one. Passes of one merchant run one at a time.
func (w *worker) runPass() {
	w.pass.Lock()
	defer w.pass.Unlock()
	ctx := w.s.ctx
	if ctx.Err() != nil {
		return
	}
	notBefore := time.Time{}
	for range 1000 {
		now := msNow(w.s.clock)
		due, err := w.s.rdb.ZRangeByScore(ctx, w.retry, &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: batch,
		}).Result()
		if err != nil {
			if ctx.Err() == nil {
				w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("reading the webhook schedule failed")
				w.armAt(now.Add(time.Second))
			}
			return
		}
		took := 0
		sem := make(chan struct{}, w.s.opts.Concurrency)
		var wg sync.WaitGroup
		for _, id := range due {
			// Take the entry only when a slot is free, with a lease from the
			// time the attempt really starts.
			sem <- struct{}{}
			at := msNow(w.s.clock)
			ok, err := takeScript.Run(ctx, w.s.rdb, []string{w.retry}, id, at.UnixMilli(), at.Add(w.lease()).UnixMilli()).Bool()
			if err != nil || !ok {
				<-sem
				if err != nil {
					if ctx.Err() == nil {
						w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("taking a webhook delivery failed")
					}
					notBefore = at.Add(time.Second) // do not spin on an error
				}
				continue // !ok: gone, rescheduled, or another hub has it
			}
			took++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				w.attempt(id)
			}()
		}
		wg.Wait()
		if took == 0 || len(due) < batch {
			break
		}
	}
	if err := w.rearm(ctx, notBefore); err != nil && ctx.Err() == nil {
		w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("reading the webhook schedule failed")
		w.armAt(msNow(w.s.clock).Add(time.Second))
	}
}

// lease is how long an attempt holds its entry: if the hub dies during the
// attempt, the entry is due again (for any hub) after this.
func (w *worker) lease() time.Duration { return 2*w.s.opts.Timeout + 30*time.Second }

// ---- timers ----

// rearm sets the retry timer to the earliest entry on the schedule, but not
// before notBefore.
func (w *worker) rearm(ctx context.Context, notBefore time.Time) error {
	zs, err := w.s.rdb.ZRangeWithScores(ctx, w.retry, 0, 0).Result()
	if err != nil {
		return err
	}
	var at time.Time
	if len(zs) > 0 {
		at = time.UnixMilli(int64(zs[0].Score)).UTC()
		if at.Before(notBefore) {
			at = notBefore
		}
	}
	if poll := w.s.opts.Poll; poll > 0 {
		if next := msNow(w.s.clock).Add(poll); at.IsZero() || at.After(next) {
			at = next
		}
	}
	w.setTimer(at)
	return nil
}

// armAt makes sure the retry timer fires by at (it never moves it later).
// An attempt arms its retry before storing it, so that whoever sees the
// retry in Redis can count on the timer.
func (w *worker) armAt(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil && !w.timerAt.After(at) {
		return
	}
	w.armLocked(at)
}

// setTimer moves the retry timer to at (zero: no timer).
func (w *worker) setTimer(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if at.IsZero() {
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
		return
	}
	if w.timer != nil && w.timerAt.Equal(at) {
		return
	}
	w.armLocked(at)
}

func (w *worker) armLocked(at time.Time) {
	if w.stopped {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	var t clock.Timer
	t = w.s.clock.AfterFunc(at.Sub(w.s.clock.Now()), func() {
		w.mu.Lock()
		if w.timer == t {
			w.timer = nil
		}
		w.mu.Unlock()
		if !w.s.track() {
			return
		}
		defer w.s.wg.Done()
		w.runPass()
	})
	w.timer, w.timerAt = t, at
}

// armSweep schedules the next sweep.
func (w *worker) armSweep() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.sweepTimer = w.s.clock.AfterFunc(w.s.opts.SweepEvery, func() {
		if !w.s.track() {
			return
		}
		defer w.s.wg.Done()
		w.sweep()
		w.armSweep()
	})
}

// sweep claims abandoned entries, drops old counters and runs a pass (which
// also re-reads the schedule others may have changed).
func (w *worker) sweep() {
	ctx := w.s.ctx
	if err := w.ensureGroup(ctx); err != nil && ctx.Err() == nil {
		w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("webhook sweep failed")
	}
	if err := w.claim(ctx); err != nil && ctx.Err() == nil {
		w.s.log.Error().Err(err).Str("merchantId", w.m).Msg("webhook sweep failed")
	}
	w.pruneStats(ctx)
	w.pruneConsumers(ctx)
	w.runPass()
}

// deadConsumerIdle is how long a consumer with nothing pending must have
// been silent before the sweep removes it from the group (hubs in containers
// get a new host name, hence a new consumer, at every start).
const deadConsumerIdle = 24 * time.Hour

// pruneConsumers removes other consumers that have nothing pending and have
// not read for a day.
func (w *worker) pruneConsumers(ctx context.Context) {
	cs, err := w.s.rdb.XInfoConsumers(ctx, w.stream, w.s.opts.Group).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name != w.s.opts.Consumer && c.Pending == 0 && c.Idle >= deadConsumerIdle {
			_ = w.s.rdb.XGroupDelConsumer(ctx, w.stream, w.s.opts.Group, c.Name).Err()
		}
	}
}

func (w *worker) stopTimers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if w.sweepTimer != nil {
		w.sweepTimer.Stop()
		w.sweepTimer = nil
	}
}

// msNow is the clock's time at millisecond precision (the schedule's).
func msNow(c clock.Clock) time.Time { return time.UnixMilli(c.Now().UnixMilli()).UTC() }
