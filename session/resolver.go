package session

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/termhub/termhub/protocol"
)

// A commit whose answer never came (ErrOutcomeUnknown: Redis stalled,
// restarted or the network dropped the reply) may or may not have been
// applied, and Redis may yet apply it when it wakes up. Until the engine
// knows, every transaction the commit touched is held: no commit of this
// process may build on a cached copy that may be stale, no POS request or
// connection change may act on it, and none of its deadlines fires. A
// worker per held transaction finds out once Redis answers — the rev the
// commit wrote is there, or a fence makes sure it never will be
// (resolveScript) — and, if the commit was applied, carries out what it
// asked of the world: deadlines armed, terminal commands sent, POS
// connections nudged to read what it wrote to their outboxes.
//
// The terminal's events that could not be applied for want of Redis are
// held the same way: the hub keeps them (the terminal, told unavailable,
// sends them again too) and the worker applies them in the order they
// came, before any deadline of the transaction may fire, so that a timer
// never wins a race against a result already received (docs/ops.md#when-redis-stalls-restarts-or-fails-over).
//
// The worker's waits run on the wall clock: it waits for Redis, which
// answers in real time, not for a protocol timer.

// errHeld refuses work on a held transaction to anyone but its worker.
var errHeld = fmt.Errorf("%w: a change of this transaction is being recovered", ErrUnavailable)

// maxHeldEvents bounds the events kept for one transaction: a terminal
// that repeats itself during a long outage must not grow the queue without
// end (repeats are dropped anyway, see queue). maxHeld bounds the
// transactions whose events are kept: during an outage a terminal may name
// any id, and whether it exists cannot be told until Redis answers. Past
// it, events are only refused (unavailable), and the terminal sends them
// again.
const (
	maxHeldEvents = 64
	maxHeld       = 10_000
)

// backlog is what the engine owes held transactions.
type backlog struct {
	e       *Engine
	n       atomic.Int64 // len(txns): the paths every commit takes skip the lock while nothing is held
	mu      sync.Mutex
	txns    map[cacheKey]*held // guarded by mu
	running sync.WaitGroup     // one per worker
	quit    chan struct{}      // closed by Engine.Close
	closed  bool               // guarded by mu
	idle    chan struct{}      // closed (and dropped) once nothing is held; guarded by mu
}

// held is one transaction's backlog. All fields are guarded by backlog.mu.
type held struct {
	merchantID, id string
	lost           []*lostCommit // commits that touched it whose outcome is not known, oldest first
	events         []heldEvent   // terminal events to apply, in the order they came
	fences         []fenceRec    // what this process's resolvers wrote to it
	working        bool          // a worker serves it
}

// heldEvent is a terminal's event and the terminal that sent it.
type heldEvent struct {
	device string
	ev     Event
}

// fenceRec is a fence a resolver wrote: its rev, and the rev it replaced
// (the one its commit expected).
type fenceRec struct{ fence, replaced int64 }

// lostCommit is a commit whose answer was lost, with what it would have
// done had it been applied.
type lostCommit struct {
	merchantID string
	c          *commit
	p          *pending
	retry      *retryRun // terminal events it applied: applied again if it was not
	// fence is the rev a resolution writes if the commit was not applied:
	// the same on every attempt, so that an attempt whose own reply was
	// lost is recognised by the next.
	fence int64

	mu   sync.Mutex // one resolution at a time
	done bool       // guarded by mu
}

// retryRun is a terminal's run of events about one transaction.
type retryRun struct {
	device string
	id     string
	evs    []Event
}

func (b *backlog) init(e *Engine) {
	b.e = e
	b.txns = map[cacheKey]*held{}
	b.quit = make(chan struct{})
}

type workerKey struct{}

// holds reports whether the transaction is held.
func (b *backlog) holds(merchantID, id string) bool {
	if b.n.Load() == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.txns[cacheKey{merchantID, id}] != nil
}

// refuses reports whether a load of the transaction for a change must be
// refused: it is held, and ctx is not its worker's.
func (b *backlog) refuses(ctx context.Context, merchantID, id string) bool {
	if b.n.Load() == 0 {
		return false
	}
	if w, _ := ctx.Value(workerKey{}).(*held); w != nil && w.merchantID == merchantID && w.id == id {
		return false
	}
	return b.holds(merchantID, id)
}

// minCommitTime is the least time a requester must have left for its
// commit to be sent: one sent with less would most likely go unanswered
// in time, and then have to be found out.
const minCommitTime = 100 * time.Millisecond

// mayCommit refuses a commit that must not be sent: its requester's time
// is (nearly) up — nothing is sent, so the answer is a plain unavailable —
// or one of its transactions was held since it was loaded.
func (b *backlog) mayCommit(ctx context.Context, merchantID string, txns []*Txn) error {
	if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && time.Until(d) < min(minCommitTime, b.e.opts.RequestTimeout/10) {
		return fmt.Errorf("%w: the request's time is up", ErrUnavailable)
	}
	for _, t := range txns {
		if b.refuses(ctx, merchantID, t.ID) {
			return errHeld
		}
	}
	return nil
}

// heldLocked returns the transaction's backlog, made if need be, and starts
// its worker.
func (b *backlog) heldLocked(merchantID, id string) *held {
	k := cacheKey{merchantID, id}
	h := b.txns[k]
	if h == nil {
		h = &held{merchantID: merchantID, id: id}
		b.txns[k] = h
		b.n.Store(int64(len(b.txns)))
	}
	if !h.working && !b.closed {
		h.working = true
		b.running.Add(1)
		go b.e.work.serve(h)
	}
	return h
}

// hold records a lost commit and holds every transaction it touched.
func (e *Engine) hold(merchantID string, c *commit, p *pending, retry *retryRun) {
	u := &lostCommit{merchantID: merchantID, c: c, p: p, retry: retry, fence: nextRev(p.revs[0].prev)}
	for u.fence == p.revs[0].next {
		u.fence = nextRev(p.revs[0].prev)
	}
	e.forget(merchantID, p)
	e.log.Warn().Str("merchantId", merchantID).Str("transactionId", p.arm[0].ID).
		Msg("commit sent but not answered: holding its transactions until Redis tells whether it was applied")
	e.work.mu.Lock()
	defer e.work.mu.Unlock()
	for _, t := range p.arm {
		h := e.work.heldLocked(merchantID, t.ID)
		h.lost = append(h.lost, u)
	}
}

// queue holds a terminal's events for the transaction, after those held
// already (first: before them, for the events of a lost commit that turned
// out not applied, which came first). An event equal to one held already
// is a repeat and is dropped.
func (b *backlog) queue(merchantID, device, id string, evs []Event, first bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.txns[cacheKey{merchantID, id}] == nil && len(b.txns) >= maxHeld {
		return
	}
	h := b.heldLocked(merchantID, id)
	add := make([]heldEvent, len(evs))
	for i, ev := range evs {
		add[i] = heldEvent{device: device, ev: ev}
	}
	if first {
		h.events = append(add, h.events...)
	} else {
		h.events = append(h.events, add...)
	}
	kept := h.events[:0]
	for i, he := range h.events {
		if !slices.ContainsFunc(h.events[:i], func(x heldEvent) bool { return x.device == he.device && reflect.DeepEqual(x.ev, he.ev) }) &&
			len(kept) < maxHeldEvents {
			kept = append(kept, he)
		}
	}
	clear(h.events[len(kept):])
	h.events = kept
}

// serve is the worker of h: it settles h's lost commits, then applies its
// events, until nothing is held; then the transaction's deadlines are
// re-armed from Redis, so that those that fell due meanwhile fire now.
func (b *backlog) serve(h *held) {
	defer b.running.Done()
	e := b.e
	ctx := context.WithValue(context.Background(), workerKey{}, h)
	attempt := 0
	for {
		b.mu.Lock()
		var u *lostCommit
		if len(h.lost) > 0 {
			u = h.lost[0]
		}
		if u == nil && len(h.events) == 0 {
			delete(b.txns, cacheKey{h.merchantID, h.id})
			b.n.Store(int64(len(b.txns)))
			h.working = false
			if len(b.txns) == 0 && b.idle != nil {
				close(b.idle)
				b.idle = nil
			}
			b.mu.Unlock()
			e.rearm(h.merchantID, h.id)
			return
		}
		b.mu.Unlock()
		var ok bool
		if u != nil {
			ok = e.settle(ctx, u)
		} else {
			ok = e.applyHeld(ctx, h)
		}
		if ok {
			attempt = 0
			continue
		}
		if !e.waitStore(attempt) {
			b.mu.Lock()
			h.working = false
			b.mu.Unlock()
			return
		}
		attempt++
	}
}

// waitStore waits before another attempt at Redis: a short, growing pause,
// then until Redis is believed up. It reports false when the engine closes.
func (e *Engine) waitStore(attempt int) bool {
	pause := time.NewTimer(min(50*time.Millisecond<<min(attempt, 5), time.Second))
	defer pause.Stop()
	select {
	case <-pause.C:
	case <-e.work.quit:
		return false
	}
	select {
	case <-e.opts.Ready():
		return true
	case <-e.work.quit:
		return false
	}
}

// settle finds out whether u was applied and acts on it; false when Redis
// did not answer (try again later).
func (e *Engine) settle(ctx context.Context, u *lostCommit) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.done {
		ctx, cancel := context.WithTimeout(ctx, e.opts.RequestTimeout)
		defer cancel()
		first, rev := u.p.arm[0], u.p.revs[0]
		found, foundRev, err := e.store.resolve(ctx, u.merchantID, first.ID, rev.prev, rev.next, u.fence)
		if err != nil {
			return false
		}
		if found == outcomeMoved {
			found = e.work.fencedBy(u, foundRev)
		}
		if m := e.opts.Metrics; m != nil {
			m.LostCommits.WithLabelValues([...]string{"applied", "not_applied", "overtaken"}[found]).Inc()
		}
		switch found {
		case outcomeApplied:
			e.log.Info().Str("transactionId", first.ID).Msg("lost commit was applied: carrying out its effects")
			turn := e.order.take(u.merchantID, replyKeys(u.p, true))
			turn.wait()
			func() {
				defer turn.done() // even if carrying out panics
				e.carryOut(u.merchantID, u.c, u.p, nil, false, nil, nil)
			}()
			e.count(u.p)
		case outcomeNotApplied:
			e.log.Info().Str("transactionId", first.ID).Msg("lost commit was not applied, and never will be")
			e.work.mu.Lock()
			if h := e.work.txns[cacheKey{u.merchantID, first.ID}]; h != nil {
				h.fences = append(h.fences, fenceRec{fence: u.fence, replaced: rev.prev})
			}
			e.work.mu.Unlock()
			if r := u.retry; r != nil {
				e.work.queue(u.merchantID, r.device, r.id, r.evs, true)
			}
		default:
			// Another writer came after it: whether it was applied the rev
			// cannot tell. Do again what is safe to do twice: arm the
			// deadlines Redis holds, send the terminal what is open for it,
			// and let the POS connections read their outboxes.
			e.log.Warn().Str("transactionId", first.ID).Msg("lost commit was overtaken by another writer: re-deriving its effects from Redis")
			if !e.rederive(ctx, u) {
				return false
			}
			if r := u.retry; r != nil { // applied or not: applying them again is harmless
				e.work.queue(u.merchantID, r.device, r.id, r.evs, true)
			}
		}
		u.done = true
	}
	e.work.mu.Lock()
	for _, t := range u.p.arm {
		if h := e.work.txns[cacheKey{u.merchantID, t.ID}]; h != nil {
			for i, x := range h.lost {
				if x == u {
					h.lost = append(h.lost[:i:i], h.lost[i+1:]...)
					break
				}
			}
		}
	}
	e.work.mu.Unlock()
	return true
}

// fencedBy tells what a rev that is neither the one u expected nor the
// one it wrote says of u: u's own fence (an earlier attempt whose reply
// was lost) means it was not applied; a sibling's fence (another lost
// commit of this process on the same transaction) tells by the rev that
// fence replaced: u's expected rev, not applied; the rev u wrote, applied
// (the sibling was built on u's result). Anything else is another
// writer's.
func (b *backlog) fencedBy(u *lostCommit, rev int64) outcome {
	if rev == u.fence {
		return outcomeNotApplied
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.txns[cacheKey{u.merchantID, u.p.arm[0].ID}]; h != nil {
		for _, f := range h.fences {
			switch {
			case f.fence != rev:
			case f.replaced == u.p.revs[0].prev:
				return outcomeNotApplied
			case f.replaced == u.p.revs[0].next:
				return outcomeApplied
			}
		}
	}
	return outcomeMoved
}

// rederive does, for the transactions of a commit whose outcome cannot be
// told, what is safe to do whether or not it was applied.
func (e *Engine) rederive(ctx context.Context, u *lostCommit) bool {
	txns := make([]*Txn, 0, len(u.p.arm))
	for _, t := range u.p.arm {
		cur, err := e.store.Load(ctx, u.merchantID, t.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return false
		}
		txns = append(txns, cur)
	}
	for _, t := range txns {
		e.timers.sync(t)
		if e.opts.Sink == nil {
			continue
		}
		if cmds := t.OpenCommands(); len(cmds) > 0 {
			e.opts.Sink.SendTerminal(t.TerminalID, cmds)
		}
		e.opts.Sink.NudgePOS(u.merchantID, t.APIKeyID)
	}
	return true
}

// applyHeld applies h's held events in order as the transaction's worker;
// false when Redis did not answer. The events are taken off the queue
// first, so that a resolver that puts a lost commit's events back in front
// meanwhile (queue, first) cannot be undone by this worker.
func (e *Engine) applyHeld(ctx context.Context, h *held) bool {
	e.work.mu.Lock()
	// A run is the first events that came from one terminal.
	n := 0
	for n < len(h.events) && h.events[n].device == h.events[0].device {
		n++
	}
	var device string
	evs := make([]Event, n)
	for i, he := range h.events[:n] {
		evs[i], device = he.ev, he.device
	}
	h.events = h.events[n:]
	e.work.mu.Unlock()
	if len(evs) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, e.opts.RequestTimeout)
	defer cancel()
	n, perr, err := e.terminalRun(ctx, h.merchantID, device, h.id, evs)
	switch {
	case perr != nil:
		e.log.Info().Str("transactionId", protocol.ForLog(h.id)).Str("code", string(perr.Code)).Msg("held terminal event refused")
		if rest := evs[n+1:]; len(rest) > 0 {
			e.work.queue(h.merchantID, device, h.id, rest, true)
		}
	case errors.Is(err, ErrOutcomeUnknown):
		// The lost commit carries them: its resolver puts them back if
		// it was not applied.
	case errors.Is(err, ErrUnavailable):
		e.work.queue(h.merchantID, device, h.id, evs, true)
		return false
	case err != nil:
		e.log.Warn().Err(err).Str("transactionId", protocol.ForLog(h.id)).Msg("held terminal events dropped")
	}
	return true
}

// rearm syncs the transaction's timers with Redis once it is no longer
// held: a deadline that came due meanwhile was put off (errHeld) and fires
// now. A failure is left to the timers' own retry and the sweeper.
func (e *Engine) rearm(merchantID, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.RequestTimeout)
	defer cancel()
	t, err := e.store.Load(ctx, merchantID, id)
	if err == nil {
		e.timers.sync(t)
	}
}

// loadForUpdate is Store.loadForUpdate, refused while the transaction is
// held but to its worker.
func (e *Engine) loadForUpdate(ctx context.Context, merchantID, id string) (*Txn, error) {
	t, _, err := e.loadCached(ctx, merchantID, id)
	return t, err
}

// loadCached is Store.loadCached, refused while the transaction is held.
func (e *Engine) loadCached(ctx context.Context, merchantID, id string) (*Txn, bool, error) {
	if e.work.refuses(ctx, merchantID, id) {
		return nil, false, errHeld
	}
	return e.store.loadCached(ctx, merchantID, id)
}

// loadFresh is Store.loadFresh, refused while the transaction is held.
func (e *Engine) loadFresh(ctx context.Context, merchantID, id string) (*Txn, error) {
	if e.work.refuses(ctx, merchantID, id) {
		return nil, errHeld
	}
	return e.store.loadFresh(ctx, merchantID, id)
}

// Idle reports whether nothing is held: no lost commit is being resolved
// and no terminal event waits to be applied.
func (e *Engine) Idle() bool {
	e.work.mu.Lock()
	defer e.work.mu.Unlock()
	return len(e.work.txns) == 0
}

// WaitIdle waits until nothing is held, or ctx ends (false).
func (e *Engine) WaitIdle(ctx context.Context) bool {
	for {
		e.work.mu.Lock()
		if len(e.work.txns) == 0 {
			e.work.mu.Unlock()
			return true
		}
		if e.work.idle == nil {
			e.work.idle = make(chan struct{})
		}
		idle := e.work.idle
		e.work.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return false
		}
	}
}

// Close stops the engine's background work: the workers of held
// transactions (what they hold is lost with the process, as on a crash:
// the terminal re-sends its results, and a restarted hub reads Redis), the
// deadline sweeper and every deadline timer.
func (e *Engine) Close() {
	e.work.mu.Lock()
	if !e.work.closed {
		e.work.closed = true
		close(e.work.quit)
	}
	e.work.mu.Unlock()
	e.sweep.stop()
	e.timers.stopAll()
	e.work.running.Wait()
}

// ForgetCaches drops every cached transaction and terminal: Redis came back
// without its data, and nothing remembered of it may guide a commit.
func (e *Engine) ForgetCaches() {
	e.store.cache.clear()
	e.store.cur.clear()
}
