package session

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/metrics"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// Terminals is what the engine needs to know about live terminals; the hub
// provides it.
type Terminals interface {
	// ResolveTerminal maps a POS's terminalId to a device id of the merchant.
	ResolveTerminal(merchantID, terminalID string) (deviceID string, ok bool)
	// TerminalLive returns the device's status, its connection id and, while
	// it is reconnecting, when its grace period ends.
	TerminalLive(deviceID string) (status TerminalStatus, connectionID string, graceUntil time.Time)
}

// TerminalStatus is a terminal's connection status: protocol.TerminalOnline,
// protocol.TerminalReconnecting or protocol.TerminalOffline.
type TerminalStatus string

// Sink carries out effects after a commit. DeliverPOS is called in the
// commit's turn among those of the API key (order.go): messages reach it in
// the order their commits were made, which is stream order unless two
// commits reached Redis the other way round (their numbers then tell).
type Sink interface {
	// DeliverPOS hands an API key's live connection, if any, the messages
	// a commit wrote to its outbox (with their ids and numbers).
	DeliverPOS(merchantID, apiKeyID string, msgs []Message)
	// NudgePOS tells the API key's live connection, if any, that its
	// outbox may hold messages it was not handed: it reads them from the
	// stream (a commit whose answer was lost turned out applied).
	NudgePOS(merchantID, apiKeyID string)
	// SendTerminal sends commands to the device's live connection, if any,
	// in order.
	SendTerminal(deviceID string, cmds []TerminalCommand)
}

// TerminalCommand is a command for a terminal: protocol.StartPayment or
// protocol.TerminalCommand.
type TerminalCommand interface{ TerminalAction() string }

// Message is a durable POS message as committed: its outbox entry id and
// its JSON without the messageId.
type Message = queue.Entry

// Options configure an Engine.
type Options struct {
	Store            *Store
	Clock            clock.Clock
	Logger           zerolog.Logger
	Terminals        Terminals
	Sink             Sink
	PaymentTimeout   time.Duration
	SignatureTimeout time.Duration
	// Observe, if set, is told every transaction a commit changed, after the
	// commit and before the terminal or the POS hears of it (for the ops
	// feed, which then sees what a change causes after it). It runs in the
	// commit's turn among its API keys' commits (order.go), so it must not
	// block, and it must not change t, which is the engine's committed
	// copy, not one of its own.
	Observe func(t *protocol.Transaction)
	// Metrics records transitions and auto-voids; nil records nothing.
	Metrics *metrics.Metrics
	// Webhooks reports whether a merchant takes webhooks; when it does, every
	// final state is queued for delivery in the same commit.
	Webhooks func(merchantID string) bool
	// Ready returns a channel that is closed while the store answers
	// (redisx.Health.Ready); the engine's recovery work waits on it. nil:
	// always ready.
	Ready func() <-chan struct{}
	// Merchants lists the merchants whose deadlines the sweeper watches
	// (sweeper.go); nil watches none.
	Merchants func() []string
	// RequestTimeout bounds the Redis work of one step of the engine's own
	// (a deadline, a recovery attempt); 5 s when zero.
	RequestTimeout time.Duration
	// Claim, with several nodes, claims a due deadline (member
	// "<txnID>|<kind>" of the deadline index, due at at) for this node: it
	// applies only those it gets (nodes.Node.ClaimDeadline). nil: alone,
	// every due deadline is applied here.
	Claim func(ctx context.Context, merchantID, member string, at time.Time) (bool, error)
}

// Engine runs transactions: it loads, applies the pure transition, commits
// atomically (retrying on a concurrent change) and hands effects to the Sink.
type Engine struct {
	opts   Options
	store  *Store
	clock  clock.Clock
	log    zerolog.Logger
	order  ordering         // per API key lines: each commit's effects in its turn (order.go)
	devs   [4096]sync.Mutex // per device stripes: creates for one terminal, one at a time
	timers *timers
	work   backlog // transactions held after a lost commit, terminal events to retry (resolver.go)
	sweep  sweeper // deadlines in Redis that no timer here watches (sweeper.go)
}

// NewEngine builds an engine.
func NewEngine(opts Options) *Engine {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.PaymentTimeout <= 0 {
		opts.PaymentTimeout = 180 * time.Second
	}
	if opts.SignatureTimeout <= 0 {
		opts.SignatureTimeout = 60 * time.Second
	}
	if opts.Webhooks == nil {
		opts.Webhooks = func(string) bool { return false }
	}
	if opts.Ready == nil {
		ready := make(chan struct{})
		close(ready)
		opts.Ready = func() <-chan struct{} { return ready }
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	e := &Engine{opts: opts, store: opts.Store, clock: opts.Clock, log: opts.Logger}
	e.timers = newTimers(e)
	e.work.init(e)
	e.sweep.e = e
	return e
}

// SetSink sets the Sink (the hub and engine are built in either order).
func (e *Engine) SetSink(s Sink) { e.opts.Sink = s }

// SetObserver sets Options.Observe.
func (e *Engine) SetObserver(f func(t *protocol.Transaction)) { e.opts.Observe = f }

// SetTerminals sets the live terminal view.
func (e *Engine) SetTerminals(t Terminals) { e.opts.Terminals = t }

func (e *Engine) now() time.Time { return e.clock.Now().UTC() }

func (e *Engine) settings() Settings {
	return Settings{SignatureTimeout: e.opts.SignatureTimeout, CommandTimeout: e.opts.PaymentTimeout}
}

// Result is the answer to a POS request.
type Result struct {
	Txn     *protocol.Transaction
	Created bool
	Status  int // HTTP status: 201 for a new transaction, else 200
}

const maxAttempts = 20

var errTooManyConflicts = errors.New("session: too many concurrent updates; try again")

func (e *Engine) lockDevice(merchantID, deviceID string) func() {
	h := fnv.New32a()
	h.Write([]byte(merchantID + "\x00" + deviceID))
	m := &e.devs[h.Sum32()%uint32(len(e.devs))]
	m.Lock()
	return m.Unlock
}

// run executes c, then sends the terminal commands, the reply and the POS
// messages (carryOut) in its turn among the commits of replyKeys
// (ordering). A commit whose answer is lost is held until the engine knows
// whether it was applied (resolver.go); retry, if set, are the terminal's
// events it applied, to be applied again if it was not.
func (e *Engine) run(ctx context.Context, merchantID string, c *commit, p *pending, res *Result, retry *retryRun) error {
	reply := replyHook(ctx)
	if res == nil {
		reply = nil
	}
	turn := e.order.take(merchantID, replyKeys(p, reply != nil))
	// Every way out gives up the place unless the turn was taken and
	// ended (done): a commit refused, failed or lost, and a panic, which
	// must not keep the key's later commits waiting forever.
	defer turn.leave()
	if err := e.work.mayCommit(ctx, merchantID, p.arm); err != nil {
		c.release()
		return err
	}
	sent, err := c.exec(ctx, e.store)
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			e.hold(merchantID, c, p, retry)
		}
		return err
	}
	turn.wait()
	e.carryOut(merchantID, c, p, sent, true, reply, res)
	turn.done()
	e.count(p)
	return nil
}

// carryOut does what an applied commit asks of the world, in its turn
// among the commits of its API keys. Deadlines are armed before anyone
// hears of the change, so a client that reacts at once (or a test that
// moves the clock) cannot outrun them. sent are the outbox entries the
// commit wrote, in order, when known; a commit whose answer was lost
// (known false) nudges the POS connections to read their outbox instead.
func (e *Engine) carryOut(merchantID string, c *commit, p *pending, sent []appended, known bool, reply func(Result), res *Result) {
	for _, t := range p.arm {
		e.timers.sync(t)
		e.store.cache.put(t)
	}
	for _, ch := range p.current {
		if ch.clear {
			e.store.cur.cleared(ch.merchantID, ch.deviceID, ch.id)
		} else {
			e.store.cur.set(ch.merchantID, ch.deviceID, ch.id)
		}
	}
	// Observers hear before the terminal and the POS do, so whatever this
	// commit's messages cause reaches them after it: a sale's PENDING
	// would otherwise often follow the DISPATCHED its terminal's answer
	// commits. Independent commits (a timer, a reconnect) may still
	// interleave; the feed's readers keep the higher version.
	if e.opts.Observe != nil {
		for _, t := range p.arm {
			// Not a copy: a committed t is only read from now on (the
			// cache holds it and hands out copies to change).
			e.opts.Observe(&t.Transaction)
		}
	}
	// The terminal hears first: its answer is the next step of a payment,
	// and it cannot overtake the reply or what this commit tells the POS,
	// because the commit it causes takes its place in the same API keys'
	// lines after this one, whose turn lasts until its reply and messages
	// are out (replyKeys: also when this commit has no POS message, as a
	// sale's has none).
	if e.opts.Sink != nil {
		for j, d := range p.devOrder {
			e.opts.Sink.SendTerminal(d, p.terminal[j])
		}
	}
	if reply != nil {
		reply(*res)
	}
	if e.opts.Sink == nil {
		return
	}
	if !known {
		for _, k := range p.order {
			e.opts.Sink.NudgePOS(merchantID, k)
		}
		return
	}
	// xadd entries come back in staging order; outbox entries were staged
	// per key in p.order's interleaving, so walk c.xadds to assign them.
	if len(c.xadds) > 0 {
		outboxes := make([]string, len(p.order)) // the stream of each key, built once
		for j, k := range p.order {
			outboxes[j] = e.store.keys.Outbox(merchantID, k)
		}
		next := make([]int, len(p.order))
		for i, streamKey := range c.xadds {
			for j := range p.order {
				if outboxes[j] == streamKey {
					m := &p.msgs[j][next[j]]
					m.ID, m.Seq = sent[i].id, sent[i].seq
					next[j]++
					break
				}
			}
		}
	}
	for j, k := range p.order {
		e.opts.Sink.DeliverPOS(merchantID, k, p.msgs[j])
	}
}

// count records a commit's transitions and auto-voids.
func (e *Engine) count(p *pending) {
	if m := e.opts.Metrics; m != nil {
		for _, s := range p.entered {
			m.Transactions.WithLabelValues(string(s)).Inc()
		}
		m.AutoVoids.Add(float64(p.autoVoid))
	}
}

// replyKeys are the API keys in whose lines a commit takes its turn: those
// it has POS messages for and, when it answers a request, those of the
// transactions it changed. The reply goes out after the terminal's
// commands (run), and the terminal's answer must not reach the POS
// before it.
func replyKeys(p *pending, replying bool) []string {
	if !replying {
		return p.order
	}
	keys := p.order
	for _, t := range p.arm {
		if !slices.Contains(keys, t.APIKeyID) {
			keys = append(keys[:len(keys):len(keys)], t.APIKeyID) // never into p.order's array
		}
	}
	return keys
}

// update applies ev to one transaction, committing with retries. idem, if
// set, is stored in the same commit.
func (e *Engine) update(ctx context.Context, merchantID, id string, ev Event, idem *idemWrite) (*Txn, *protocol.Error, error) {
	t, _, perr, err := e.updateRun(ctx, merchantID, id, []Event{ev}, idem, "")
	return t, perr, err
}

// updateRun applies evs, in order, to one transaction and commits what they
// changed in one commit, with retries: the same outcome as one update per
// event, in one round trip to Redis (a terminal's commandReceived and
// paymentResult often arrive together). It stops at the first event that
// is refused: it returns how many were applied before it (committed) and
// the refusal, and the events after it are not applied. idem, if set, is
// stored in the same commit; it is only given with one event. from is the
// device that sent evs, when they are a terminal's (so that they are
// applied again if their commit is lost and was not applied), else "".
func (e *Engine) updateRun(ctx context.Context, merchantID, id string, evs []Event, idem *idemWrite, from string) (*Txn, int, *protocol.Error, error) {
	fresh := false // read Redis, not the cache
	for attempt := 0; attempt < maxAttempts; attempt++ {
		t, cached, err := e.loadRun(ctx, merchantID, id, fresh)
		if err != nil {
			return nil, 0, nil, err
		}
		was := before(t)
		if d, ok := evs[0].(EvDeadline); ok && len(evs) == 1 {
			at := t.Deadline(d.Kind)
			if at.IsZero() || e.now().Before(at) {
				e.timers.sync(t) // moved, cleared, or fired early (Redis keeps ms): re-arm
				return t, 0, nil, nil
			}
		}
		r := e.applyRun(t, evs)
		if cached && (r.perr != nil || !r.changed) {
			// A decision that commits nothing is not checked by a rev, so
			// it must not rest on a cached copy that may be behind Redis:
			// a POS can hear of a commit (a replay reads the stream) before
			// the committing goroutine has cached it, and answer at once.
			e.store.cache.forget(merchantID, id)
			fresh = true
			continue
		}
		if len(r.steps) == 0 {
			return t, 0, r.perr, nil
		}
		if !r.changed {
			e.unchangedRun(ctx, merchantID, t, r.steps, idem)
			return t, len(r.steps), r.perr, nil
		}
		var retry *retryRun
		if from != "" {
			retry = &retryRun{device: from, id: id, evs: evs[:len(r.steps)]}
		}
		err = e.commitRun(ctx, merchantID, t, was, r.steps, idem, retry)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, 0, nil, err
		}
		if r.autoVoid {
			e.log.Warn().Str("transactionId", t.ID).Str("merchantId", merchantID).Str("reasonCode", t.VoidReasonCode).
				Msg("late approval voided automatically")
		}
		return t, len(r.steps), r.perr, nil
	}
	return nil, 0, nil, errTooManyConflicts
}

// loadRun loads a transaction to change: from the cache when it may, from
// Redis when fresh. cached reports whether the copy came from the cache.
func (e *Engine) loadRun(ctx context.Context, merchantID, id string, fresh bool) (t *Txn, cached bool, err error) {
	if fresh {
		t, err = e.loadFresh(ctx, merchantID, id)
		return t, false, err
	}
	return e.loadCached(ctx, merchantID, id)
}

// runResult is what applying a run of events did to a transaction.
type runResult struct {
	steps    []step          // one per applied event
	changed  bool            // some event changed the transaction
	autoVoid bool            // some event voided a late approval
	perr     *protocol.Error // the refusal of the event after the steps, if any
}

// applyRun applies evs to t in order, up to the first one refused.
func (e *Engine) applyRun(t *Txn, evs []Event) runResult {
	now, settings := e.now(), e.settings()
	r := runResult{steps: make([]step, 0, len(evs))}
	for i, ev := range evs {
		fx, pe := Apply(t, ev, now, settings)
		if pe != nil {
			r.perr = pe
			break
		}
		s := step{fx: fx}
		if fx.Webhook != "" && i < len(evs)-1 {
			s.hook = t.Wire() // a later event changes t before it is staged
		}
		r.steps = append(r.steps, s)
		r.changed = r.changed || fx.Changed
		r.autoVoid = r.autoVoid || fx.AutoVoid
	}
	return r
}

// unchangedRun carries out a run that changed nothing and so commits
// nothing: the idempotency record, if any, and the terminal commands the
// events repeat (an answer the terminal asks for again).
func (e *Engine) unchangedRun(ctx context.Context, merchantID string, t *Txn, steps []step, idem *idemWrite) {
	if idem != nil {
		e.storeIdemLate(ctx, merchantID, idem, t)
	}
	if e.opts.Sink != nil {
		for _, s := range steps {
			if len(s.fx.Terminal) > 0 {
				e.opts.Sink.SendTerminal(t.TerminalID, s.fx.Terminal)
			}
		}
	}
}

// commitRun stages and runs the commit of a run that changed t. On
// errConflict the cached copies it touched are forgotten, for the caller to
// read again.
func (e *Engine) commitRun(ctx context.Context, merchantID string, t *Txn, was prior, steps []step, idem *idemWrite, retry *retryRun) error {
	c, p := newCommit(), newPending()
	if err := e.stageSteps(c, p, t, was.deadlines, was.open, was.active, steps...); err != nil {
		return err
	}
	if t.Type == protocol.TypeRefund && was.active && !t.Active() {
		if err := e.settleRefund(ctx, c, p, t); err != nil {
			return err
		}
	}
	if idem != nil {
		idem.stage(c, e.store, merchantID, t, protocol.ResultStatus(false), nil)
	}
	var res *Result // for a reply hook only: a terminal's events have none
	if replyHook(ctx) != nil {
		res = &Result{Txn: t.Wire(), Status: protocol.ResultStatus(false)}
	}
	err := e.run(ctx, merchantID, c, p, res, retry)
	if errors.Is(err, errConflict) {
		e.forget(merchantID, p)
	}
	return err
}

// prior is what staging a changed transaction needs to know of it as it
// was loaded: its deadlines (to move their index entries), whether it had
// open commands and whether it was active.
type prior struct {
	deadlines    map[string]time.Time
	open, active bool
}

func before(t *Txn) prior {
	return prior{deadlines: t.Deadlines(), open: t.HasOpenCommands(), active: t.Active()}
}

// forget drops the cached copies of what a failed commit touched.
func (e *Engine) forget(merchantID string, p *pending) {
	for _, t := range p.arm {
		e.store.cache.forget(merchantID, t.ID)
	}
	for _, ch := range p.current {
		e.store.cur.forget(ch.merchantID, ch.deviceID)
	}
}

func toClientErr(err error) *protocol.Error {
	if errors.Is(err, ErrNotFound) {
		return protocol.Errorf(protocol.CodeTransactionNotFound, "transactionId", "no such transaction")
	}
	return nil
}

// String makes Result readable in test failures.
func (r Result) String() string {
	if r.Txn == nil {
		return "Result{}"
	}
	return fmt.Sprintf("Result{%s %s created=%v %d}", r.Txn.ID, r.Txn.Status, r.Created, r.Status)
}

type replyKey struct{}

// WithReply asks the engine to call f with the request's result right after
// its commit and before any message it caused is delivered, so that a client
// always sees the reply to its request before the outcome (docs/protocol.md#pos-protocol).
// f is called at most once, in the caller's goroutine.
func WithReply(ctx context.Context, f func(Result)) context.Context {
	return context.WithValue(ctx, replyKey{}, f)
}

func replyHook(ctx context.Context) func(Result) {
	f, _ := ctx.Value(replyKey{}).(func(Result))
	return f
}
