package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/termhub/termhub/clock"
)

// timers mirrors the deadlines in Redis with in-process timers on the
// engine's clock. Redis is the truth: a timer that fires re-reads the
// transaction and acts only if the deadline is still set and due, and a
// restarted hub re-arms everything from Redis (Engine.Start).
type timers struct {
	e      *Engine
	mu     sync.Mutex
	m      map[timerKey]armed // guarded by mu
	closed bool               // the engine closed: nothing is armed any more; guarded by mu
}

// timerKey names one deadline timer. A struct rather than a joined string:
// sync looks up four per commit, and a struct key needs no string built
// for each lookup.
type timerKey struct{ merchantID, txnID, kind string }

type armed struct {
	at time.Time
	t  clock.Timer
}

func newTimers(e *Engine) *timers { return &timers{e: e, m: map[timerKey]armed{}} }

var deadlineKinds = []string{DeadlinePayment, DeadlineGrace, DeadlineSignature, DeadlineCommand}

// sync arms t's deadlines and stops the timers of deadlines it cleared.
func (ts *timers) sync(t *Txn) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, kind := range deadlineKinds {
		ts.setLocked(t.MerchantID, t.ID, kind, t.Deadline(kind))
	}
}

func (ts *timers) setLocked(merchantID, txnID, kind string, at time.Time) {
	if ts.closed {
		return
	}
	k := timerKey{merchantID, txnID, kind}
	cur, ok := ts.m[k]
	if ok && cur.at.Equal(at) {
		return
	}
	if ok {
		cur.t.Stop()
		delete(ts.m, k)
	}
	if at.IsZero() {
		return
	}
	d := at.Sub(ts.e.now())
	if d < 0 {
		d = 0
	}
	ts.m[k] = armed{at: at, t: ts.e.clock.AfterFunc(d, func() { ts.fire(merchantID, txnID, kind, at) })}
}

// armMissing arms a timer for a deadline that has none (the sweeper).
func (ts *timers) armMissing(merchantID, txnID, kind string, at time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.m[timerKey{merchantID, txnID, kind}]; !ok {
		ts.setLocked(merchantID, txnID, kind, at)
	}
}

func (ts *timers) fire(merchantID, txnID, kind string, at time.Time) {
	ts.mu.Lock()
	k := timerKey{merchantID, txnID, kind}
	if cur, ok := ts.m[k]; ok && cur.at.Equal(at) {
		delete(ts.m, k)
	}
	ts.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), ts.e.opts.RequestTimeout)
	defer cancel()
	if claim := ts.e.opts.Claim; claim != nil {
		// Several nodes: of those whose timers or sweeps find the deadline
		// due, the one that claims it applies it.
		ok, err := claim(ctx, merchantID, txnID+"|"+kind, at)
		if err == nil && !ok {
			return
		}
		if err != nil {
			ts.e.log.Warn().Err(err).Str("transactionId", txnID).Str("deadline", kind).Msg("could not claim the deadline; retrying")
			ts.mu.Lock()
			if _, ok := ts.m[k]; !ok {
				ts.setLocked(merchantID, txnID, kind, ts.e.now().Add(time.Second))
			}
			ts.mu.Unlock()
			return
		}
	}
	if err := ts.e.Deadline(ctx, merchantID, txnID, kind); err != nil {
		// Tried again in a second: Redis did not answer, or the
		// transaction is held (resolver.go), whose worker re-arms it when
		// it is done.
		ev := ts.e.log.Error()
		if errors.Is(err, errHeld) {
			ev = ts.e.log.Debug()
		}
		ev.Err(err).Str("transactionId", txnID).Str("deadline", kind).Msg("deadline not applied yet; retrying")
		ts.mu.Lock()
		if _, ok := ts.m[k]; !ok { // unless a commit armed it anew meanwhile
			ts.setLocked(merchantID, txnID, kind, ts.e.now().Add(time.Second))
		}
		ts.mu.Unlock()
	}
}

// stopAll stops every timer (the engine closes).
func (ts *timers) stopAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for k, a := range ts.m {
		a.t.Stop()
		delete(ts.m, k)
	}
	ts.closed = true
}

// Armed returns how many deadline timers are running (for metrics).
func (ts *timers) Armed() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.m)
}

// Start re-arms every deadline of the merchants from Redis, including those
// that fell due while no hub was running (they fire at once).
func (e *Engine) Start(ctx context.Context, merchantIDs []string) error {
	for _, m := range merchantIDs {
		ds, err := e.store.Deadlines(ctx, m, time.Time{})
		if err != nil {
			return err
		}
		e.timers.mu.Lock()
		for _, d := range ds {
			e.timers.setLocked(m, d.TxnID, d.Kind, d.At)
		}
		e.timers.mu.Unlock()
	}
	e.sweep.start()
	return nil
}

// ArmedTimers returns how many deadline timers are running.
func (e *Engine) ArmedTimers() int { return e.timers.Armed() }

// Deadline applies a deadline that fell due (a timer or the sweeper). It
// waits (errHeld) while the transaction is held: a result the terminal sent
// before the deadline is applied first, so that a timer never wins a race
// against a result already received.
func (e *Engine) Deadline(ctx context.Context, merchantID, txnID, kind string) error {
	if e.work.holds(merchantID, txnID) {
		return errHeld
	}
	_, _, err := e.update(ctx, merchantID, txnID, EvDeadline{Kind: kind}, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
