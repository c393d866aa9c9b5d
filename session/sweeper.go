package session

import (
	"context"
	"sync"
	"time"

	"github.com/termhub/termhub/clock"
)

// sweepEvery is how often the sweeper looks for deadlines no timer watches.
const sweepEvery = 5 * time.Second

// sweeper looks in Redis, every sweepEvery on the engine's clock, for
// deadlines that are due and that no timer of this process watches, and
// arms a timer for each (which fires at once). Every deadline is written
// in the same commit as the transaction that needs it, but the timer that
// mirrors it is armed only by the process that learns of the commit: one
// that crashed right after it, or a commit whose answer was lost and whose
// resolution never came, would otherwise leave a transaction waiting
// forever. Timers fire on their own; the sweeper only catches what they
// missed.
type sweeper struct {
	e       *Engine
	mu      sync.Mutex
	t       clock.Timer // guarded by mu
	stopped bool        // guarded by mu
}

// start arms the first sweep.
func (s *sweeper) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped && s.t == nil {
		s.t = s.e.clock.AfterFunc(sweepEvery, s.tick)
	}
}

func (s *sweeper) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.t != nil {
		s.t.Stop()
	}
}

func (s *sweeper) tick() {
	s.e.Sweep()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.t = s.e.clock.AfterFunc(sweepEvery, s.tick)
	}
}

// Sweep arms a timer for every due deadline of the merchants (Options.
// Merchants) that no timer of this process watches. The sweeper calls it
// every sweepEvery; a merchant whose deadlines cannot be read is left to
// the next sweep.
func (e *Engine) Sweep() {
	if e.opts.Merchants == nil {
		return
	}
	now := e.now()
	for _, m := range e.opts.Merchants() {
		ctx, cancel := context.WithTimeout(context.Background(), e.opts.RequestTimeout)
		ds, err := e.store.Deadlines(ctx, m, now)
		cancel()
		if err != nil {
			e.log.Debug().Err(err).Str("merchantId", m).Msg("deadline sweep skipped")
			continue
		}
		for _, d := range ds {
			e.timers.armMissing(m, d.TxnID, d.Kind, d.At)
		}
	}
}
