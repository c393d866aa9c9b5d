package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
	TerminalLive(deviceID string) (status, connectionID string, graceUntil time.Time)
}

// Sink carries out effects after a commit. DeliverPOS is called while the
// API key's ordering lock is held, so messages reach it in stream order.
type Sink interface {
	// DeliverPOS hands an API key's live connection, if any, the messages
	// a commit wrote to its outbox (with their ids and numbers).
	DeliverPOS(merchantID, apiKeyID string, msgs []Message)
	// NudgePOS tells the API key's live connection, if any, that its
	// outbox may hold messages it was not handed: it reads them from the
	// stream (a commit whose answer was lost turned out applied).
	NudgePOS(merchantID, apiKeyID string)
	SendTerminal(deviceID string, cmds []any)
}

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
	// feed, which then sees what a change causes after it). It runs with
	// the commit's ordering locks held, so it must not block, and it must
	// not change t, which is the engine's committed copy, not one of its own.
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
}

// Engine runs transactions: it loads, applies the pure transition, commits
// atomically (retrying on a concurrent change) and hands effects to the Sink.
type Engine struct {
	opts   Options
	store  *Store
	clock  clock.Clock
	log    zerolog.Logger
	locks  [4096]sync.Mutex // per API key stripes: commit and live delivery in stream order
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

// newTxnID returns a new transaction id: "txn_" and 24 random hex digits.
// About 1 draw in 900 has a run of decimal digits that passes for a card
// number (protocol.ContainsCardNumber); such a draw is made again, so that
// a client may quote a transaction id in any text it sends (the simulator
// puts it in its requestIds) without having it refused by the text rules.
func newTxnID() string {
	b := make([]byte, 12)
	for {
		_, _ = rand.Read(b)
		if id := "txn_" + hex.EncodeToString(b); !protocol.ContainsCardNumber(id) {
			return id
		}
	}
}

func (e *Engine) lockDevice(merchantID, deviceID string) func() {
	h := fnv.New32a()
	h.Write([]byte(merchantID + "\x00" + deviceID))
	m := &e.devs[h.Sum32()%uint32(len(e.devs))]
	m.Lock()
	return m.Unlock
}

func (e *Engine) lockKeys(merchantID string, apiKeys ...string) func() {
	idx := make([]int, 0, len(apiKeys))
	for _, k := range apiKeys {
		h := fnv.New32a()
		h.Write([]byte(merchantID + "\x00" + k))
		i := int(h.Sum32() % uint32(len(e.locks)))
		dup := false
		for _, j := range idx {
			dup = dup || j == i
		}
		if !dup {
			idx = append(idx, i)
		}
	}
	// Lock in index order so two commits never wait on each other in reverse.
	for a := 1; a < len(idx); a++ {
		for b := a; b > 0 && idx[b-1] > idx[b]; b-- {
			idx[b-1], idx[b] = idx[b], idx[b-1]
		}
	}
	for _, i := range idx {
		e.locks[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			e.locks[idx[j]].Unlock()
		}
	}
}

// pending collects what one commit produces for the world. A commit
// touches one or two API keys and terminals, so they are kept in short
// slices (index-aligned) rather than maps.
type pending struct {
	order    []string    // api keys in first-use order
	msgs     [][]Message // messages of order[i] (ids filled after exec)
	devOrder []string    // devices in first-use order
	terminal [][]any     // commands for devOrder[i]
	arm      []*Txn
	revs     []revChange // of arm[i], index-aligned
	current  []curChange // in staging order
	entered  []protocol.Status
	autoVoid int
}

func newPending() *pending { return &pending{} }

// revChange is the rev a commit expects a transaction at and the one it
// writes.
type revChange struct{ prev, next int64 }

// addPOS queues a durable message for an API key.
func (p *pending) addPOS(apiKey string, m Message) {
	for i, k := range p.order {
		if k == apiKey {
			p.msgs[i] = append(p.msgs[i], m)
			return
		}
	}
	p.order = append(p.order, apiKey)
	p.msgs = append(p.msgs, []Message{m})
}

func (p *pending) addTerminal(device string, cmds []any) {
	if len(cmds) == 0 {
		return
	}
	for i, d := range p.devOrder {
		if d == device {
			p.terminal[i] = append(p.terminal[i], cmds...)
			return
		}
	}
	p.devOrder = append(p.devOrder, device)
	p.terminal = append(p.terminal, cmds[:len(cmds):len(cmds)]) // a later add copies instead of writing into the caller's array
}

// stage adds t's save and the messages and webhook of fx to c.
func (e *Engine) stage(c *commit, p *pending, t *Txn, prev map[string]time.Time, wasOpen, wasActive bool, fx Effects) error {
	return e.stageSteps(c, p, t, prev, wasOpen, wasActive, step{fx: fx})
}

// step is what one event of a run did to a transaction (update): its
// effects and, when it queued a webhook, the transaction as that event left
// it, since a later event of the run changes t before it is staged.
type step struct {
	fx   Effects
	hook *protocol.Transaction // nil: t as staged
}

// stageSteps adds t's save to c, once, and the messages and webhooks of
// every step, in order.
func (e *Engine) stageSteps(c *commit, p *pending, t *Txn, prev map[string]time.Time, wasOpen, wasActive bool, steps ...step) error {
	prevRev := t.Rev
	if err := e.store.saveTxn(c, t, prev); err != nil {
		return err
	}
	ks := e.store.keys
	switch open := t.HasOpenCommands(); {
	case open && !wasOpen:
		c.sadd(ks.Open(t.MerchantID, t.TerminalID), t.ID)
	case !open && wasOpen:
		c.srem(ks.Open(t.MerchantID, t.TerminalID), t.ID)
	}
	if wasActive && !t.Active() {
		c.delIfEq(ks.Current(t.MerchantID, t.TerminalID), t.ID)
		p.current = append(p.current, curChange{merchantID: t.MerchantID, deviceID: t.TerminalID, id: t.ID, clear: true})
	}
	for _, s := range steps {
		fx := s.fx
		for _, ev := range fx.POS {
			data, err := ev.AppendJSON(make([]byte, 0, 1280))
			if err != nil {
				return err
			}
			c.xadd(ks.Outbox(t.MerchantID, t.APIKeyID), ks.OutboxSeq(t.MerchantID, t.APIKeyID), data)
			p.addPOS(t.APIKeyID, Message{Data: data})
		}
		if fx.Webhook != "" && e.opts.Webhooks(t.MerchantID) {
			wire := s.hook
			if wire == nil {
				wire = t.Wire()
			}
			evt, err := json.Marshal(WebhookEvent{ID: "evt_" + newTxnID()[4:], Type: fx.Webhook, CreatedAt: e.now(), Data: WebhookData{Transaction: wire}})
			if err != nil {
				return err
			}
			c.appendEntry(ks.Webhooks(t.MerchantID), evt)
		}
		p.addTerminal(t.TerminalID, fx.Terminal)
		p.entered = append(p.entered, fx.Entered...)
		if fx.AutoVoid {
			p.autoVoid++
		}
	}
	p.arm = append(p.arm, t)
	p.revs = append(p.revs, revChange{prev: prevRev, next: t.Rev})
	return nil
}

// WebhookEvent is a webhook body (CONTRACT §10).
type WebhookEvent struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	CreatedAt time.Time   `json:"createdAt"`
	Data      WebhookData `json:"data"`
}

// WebhookData carries the transaction of a webhook event.
type WebhookData struct {
	Transaction *protocol.Transaction `json:"transaction"`
}

// run executes c with the ordering locks of replyKeys held, then, still
// under the locks, sends the terminal commands, the reply and the POS
// messages (carryOut). A commit whose answer is lost is held until the
// engine knows whether it was applied (resolver.go); retry, if set, are the
// terminal's events it applied, to be applied again if it was not.
func (e *Engine) run(ctx context.Context, merchantID string, c *commit, p *pending, res *Result, retry *retryRun) error {
	reply := replyHook(ctx)
	if res == nil {
		reply = nil
	}
	unlock := e.lockKeys(merchantID, replyKeys(p, reply != nil)...)
	if err := e.work.mayCommit(ctx, merchantID, p.arm); err != nil {
		unlock()
		c.release()
		return err
	}
	sent, err := c.exec(ctx, e.store)
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			e.hold(merchantID, c, p, retry)
		}
		unlock()
		return err
	}
	e.carryOut(merchantID, c, p, sent, true, reply, res)
	unlock()
	e.count(p)
	return nil
}

// carryOut does what an applied commit asks of the world, with the
// ordering locks of its API keys held. Deadlines are armed before anyone
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
	// because the commit it causes delivers under the same API key locks,
	// held here until this commit's reply and messages are out (replyKeys:
	// also when this commit has no POS message, as a sale's has none).
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

// replyKeys are the API keys whose ordering locks a commit holds: those
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
		var (
			t      *Txn
			cached bool
			err    error
		)
		if fresh {
			t, err = e.loadFresh(ctx, merchantID, id)
		} else {
			t, cached, err = e.loadCached(ctx, merchantID, id)
		}
		if err != nil {
			return nil, 0, nil, err
		}
		prev, wasOpen, wasActive := t.Deadlines(), t.HasOpenCommands(), t.Active()
		if d, ok := evs[0].(EvDeadline); ok && len(evs) == 1 {
			at := t.Deadline(d.Kind)
			if at.IsZero() || e.now().Before(at) {
				e.timers.sync(t) // moved, cleared, or fired early (Redis keeps ms): re-arm
				return t, 0, nil, nil
			}
		}
		now, settings := e.now(), e.settings()
		steps := make([]step, 0, len(evs))
		changed, autoVoid := false, false
		var perr *protocol.Error
		for i, ev := range evs {
			fx, pe := Apply(t, ev, now, settings)
			if pe != nil {
				perr = pe
				break
			}
			s := step{fx: fx}
			if fx.Webhook != "" && i < len(evs)-1 {
				s.hook = t.Wire() // a later event changes t before it is staged
			}
			steps = append(steps, s)
			changed = changed || fx.Changed
			autoVoid = autoVoid || fx.AutoVoid
		}
		if cached && (perr != nil || !changed) {
			// A decision that commits nothing is not checked by a rev, so
			// it must not rest on a cached copy that may be behind Redis:
			// a POS can hear of a commit (a replay reads the stream) before
			// the committing goroutine has cached it, and answer at once.
			e.store.cache.forget(merchantID, id)
			fresh = true
			continue
		}
		if len(steps) == 0 {
			return t, 0, perr, nil
		}
		if !changed {
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
			return t, len(steps), perr, nil
		}
		c, p := newCommit(), newPending()
		if err := e.stageSteps(c, p, t, prev, wasOpen, wasActive, steps...); err != nil {
			return nil, 0, nil, err
		}
		if t.Type == protocol.TypeRefund && wasActive && !t.Active() {
			if err := e.settleRefund(ctx, c, p, t); err != nil {
				return nil, 0, nil, err
			}
		}
		if idem != nil {
			idem.stage(c, e.store, merchantID, t, http.StatusOK, nil)
		}
		var res *Result // for a reply hook only: a terminal's events have none
		if replyHook(ctx) != nil {
			res = &Result{Txn: t.Wire(), Status: http.StatusOK}
		}
		var retry *retryRun
		if from != "" {
			retry = &retryRun{device: from, id: id, evs: evs[:len(steps)]}
		}
		err = e.run(ctx, merchantID, c, p, res, retry)
		if errors.Is(err, errConflict) {
			e.forget(merchantID, p)
			continue
		}
		if err != nil {
			return nil, 0, nil, err
		}
		if autoVoid {
			e.log.Warn().Str("transactionId", t.ID).Str("merchantId", merchantID).Str("reasonCode", t.VoidReasonCode).
				Msg("late approval voided automatically")
		}
		return t, len(steps), perr, nil
	}
	return nil, 0, nil, errTooManyConflicts
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

// settleRefund releases a final refund's reservation on its sale and, if
// it completed, adds it to the sale's refunded amount.
func (e *Engine) settleRefund(ctx context.Context, c *commit, p *pending, r *Txn) error {
	parent, err := e.loadForUpdate(ctx, r.MerchantID, r.ParentID)
	if err != nil {
		return err
	}
	prev := parent.Deadlines()
	parent.ReservedRefundMinor -= r.AmountMinor
	if parent.ReservedRefundMinor < 0 {
		parent.ReservedRefundMinor = 0
	}
	if r.Status == protocol.StatusCompleted {
		parent.RefundedAmountMinor += r.AmountMinor
		parent.Version++
		parent.UpdatedAt = e.now()
		parent.History = append(parent.History, protocol.HistoryEntry{Status: parent.Status, At: e.now(), Cause: "refund " + r.ID + " completed"})
	}
	return e.stage(c, p, parent, prev, parent.HasOpenCommands(), parent.Active(), Effects{Changed: true})
}

func toClientErr(err error) *protocol.Error {
	if errors.Is(err, ErrNotFound) {
		return protocol.Errorf(protocol.CodeTransactionNotFound, "transactionId", "no such transaction")
	}
	return nil
}

// ---- POS requests ----

// CreateInput is a sale request.
type CreateInput struct {
	MerchantID string
	APIKeyID   string
	Req        *protocol.PaymentRequest
	IdemKey    string
}

// Create starts a sale (CONTRACT §7): idempotency by reference and
// Idempotency-Key, terminal resolution, offline check, superseding a PENDING
// sale, the per-device lock, all committed atomically.
func (e *Engine) Create(ctx context.Context, in CreateInput) (Result, error) {
	req := in.Req
	fp := ""
	if in.IdemKey != "" { // only an Idempotency-Key's record keeps it
		fp = fingerprint(protocol.ActionPayment, req)
	}
	device, ok := e.opts.Terminals.ResolveTerminal(in.MerchantID, req.TerminalID)
	if !ok {
		return Result{}, protocol.Errorf(protocol.CodeTerminalNotFound, "terminalId", "no such terminal")
	}
	return e.createTxn(ctx, in.MerchantID, in.IdemKey, fp, func(now time.Time) (*Txn, *protocol.Error) {
		return &Txn{APIKeyID: in.APIKeyID, Transaction: protocol.Transaction{
			ID: newTxnID(), MerchantID: in.MerchantID, TerminalID: device, Type: protocol.TypeSale,
			AmountMinor: req.Minor(), Amount: protocol.FormatAmount(req.Minor(), req.Currency), Currency: req.Currency,
			Reference: req.Reference, CaptureMode: req.CaptureMode, Description: req.Description,
			PrintReceipt: req.PrintReceipt == nil || *req.PrintReceipt, TimeoutSeconds: e.timeoutSeconds(req.TimeoutSeconds),
		}}, nil
	}, nil, nil)
}

func (e *Engine) timeoutSeconds(v *int) int {
	if v != nil {
		return *v
	}
	return int(e.opts.PaymentTimeout / time.Second)
}

// RefundInput is a refund request.
type RefundInput struct {
	MerchantID string
	APIKeyID   string
	Req        *protocol.RefundRequest
	IdemKey    string
}

// Refund creates a refund of a completed sale on the sale's terminal.
func (e *Engine) Refund(ctx context.Context, in RefundInput) (Result, error) {
	req := in.Req
	fp := ""
	if in.IdemKey != "" {
		fp = fingerprint(protocol.ActionRefund, req)
		if r, done, err := e.replayIdem(ctx, in.MerchantID, in.IdemKey, fp); done || err != nil {
			return r, err
		}
	}
	if req.Reference != "" {
		// A retried refund finds its first attempt by reference before any
		// amount check (whatever its Idempotency-Key): a full refund retried
		// must not look like too much.
		if r, done, err := e.existingRefund(ctx, in.MerchantID, req); done || err != nil {
			return r, err
		}
	}
	var parentPrev map[string]time.Time
	var parentWasOpen, parentWasActive bool
	var parent *Txn
	return e.createTxn(ctx, in.MerchantID, in.IdemKey, fp, func(now time.Time) (*Txn, *protocol.Error) {
		p, err := e.store.Load(ctx, in.MerchantID, req.TransactionID)
		if err != nil {
			if ce := toClientErr(err); ce != nil {
				return nil, ce
			}
			return nil, protocol.Errorf(protocol.CodeInternal, "", "could not load the sale")
		}
		if p.Type != protocol.TypeSale {
			return nil, protocol.Errorf(protocol.CodeInvalidState, "transactionId", "only a sale can be refunded")
		}
		if p.Status != protocol.StatusCompleted {
			return nil, protocol.Errorf(protocol.CodeInvalidState, "transactionId", "cannot refund a transaction in status %s", p.Status)
		}
		amt, perr := req.ResolveAmount(p.Currency)
		if perr != nil {
			return nil, perr
		}
		left := p.RefundableMinor()
		if amt == 0 {
			amt = left
		}
		if amt <= 0 || amt > left {
			field := "amountMinor"
			if len(req.Amount) > 0 {
				field = "amount"
			}
			return nil, protocol.Errorf(protocol.CodeRefundExceedsAmount, field, "refund of %s exceeds the %s %s left to refund",
				protocol.FormatAmount(amt, p.Currency), protocol.FormatAmount(max(left, 0), p.Currency), p.Currency)
		}
		parent, parentPrev, parentWasOpen, parentWasActive = p, p.Deadlines(), p.HasOpenCommands(), p.Active()
		p.ReservedRefundMinor += amt
		return &Txn{APIKeyID: in.APIKeyID, Transaction: protocol.Transaction{
			ID: newTxnID(), MerchantID: in.MerchantID, TerminalID: p.TerminalID, Type: protocol.TypeRefund, ParentID: p.ID,
			AmountMinor: amt, Amount: protocol.FormatAmount(amt, p.Currency), Currency: p.Currency,
			Reference: req.Reference, CaptureMode: protocol.CaptureAuto, Description: req.Reason,
			PrintReceipt: true, TimeoutSeconds: e.timeoutSeconds(nil),
		}}, nil
	}, func(c *commit, p *pending) error {
		return e.stage(c, p, parent, parentPrev, parentWasOpen, parentWasActive, Effects{Changed: true})
	}, func(superseded *Txn) bool {
		// A PENDING refund of the same sale is superseded: release its
		// reservation on the sale object this commit already holds.
		if parent == nil || superseded.ParentID != parent.ID {
			return false
		}
		parent.ReservedRefundMinor = max(parent.ReservedRefundMinor-superseded.AmountMinor, 0)
		return true
	})
}

// existingRefund answers a refund whose reference is already used: the same
// refund (200, created:false) or reference_conflict.
func (e *Engine) existingRefund(ctx context.Context, merchantID string, req *protocol.RefundRequest) (Result, bool, error) {
	id, err := e.store.get(ctx, e.store.keys.Ref(merchantID, req.Reference))
	if err != nil || id == "" {
		return Result{}, false, err
	}
	t, err := e.store.Load(ctx, merchantID, id)
	if err != nil {
		return Result{}, true, err
	}
	amt, perr := req.ResolveAmount(t.Currency)
	if perr != nil {
		return Result{}, true, perr
	}
	if t.Type != protocol.TypeRefund || t.ParentID != req.TransactionID || (amt != 0 && amt != t.AmountMinor) {
		return Result{}, true, protocol.Errorf(protocol.CodeReferenceConflict, "reference",
			"reference %q is already used by %s for another transaction or amount", req.Reference, t.ID)
	}
	return Result{Txn: t.Wire(), Created: false, Status: http.StatusOK}, true, nil
}

// Current returns the transaction occupying each device ("" for none).
func (e *Engine) Current(ctx context.Context, merchantID string, devices []string) (map[string]string, error) {
	out := make(map[string]string, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	ks := make([]string, len(devices))
	for i, d := range devices {
		ks[i] = e.store.keys.Current(merchantID, d)
	}
	vals, err := e.store.rdb.MGet(ctx, ks...).Result()
	if err != nil {
		return nil, storeErr(err)
	}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[devices[i]] = s
		}
	}
	return out, nil
}

// CurrentKnown is Current as this process last committed it, without
// asking Redis: for answers that must not wait on a Redis that does not
// answer (a greeting, ops). A device this process knows nothing of, or
// knows free, is left out.
func (e *Engine) CurrentKnown(merchantID string, devices []string) map[string]string {
	out := make(map[string]string, len(devices))
	for _, d := range devices {
		if id, ok := e.store.cur.get(merchantID, d); ok && id != "" {
			out[d] = id
		}
	}
	return out
}

// createTxn is the shared path of Create and Refund. build returns the new
// transaction (not yet saved); extra stages more writes into the commit.
// sameParent, when set, settles a superseded refund itself and reports
// whether it did (the refund path holds the sale in memory already).
func (e *Engine) createTxn(ctx context.Context, merchantID, idemKey, fp string,
	build func(now time.Time) (*Txn, *protocol.Error), extra func(*commit, *pending) error,
	sameParent func(superseded *Txn) bool) (Result, error) {
	ks := e.store.keys
	optimistic := true
	var unlockDevice func()
	defer func() {
		if unlockDevice != nil {
			unlockDevice()
		}
	}()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if idemKey != "" {
			if r, done, err := e.replayIdem(ctx, merchantID, idemKey, fp); done || err != nil {
				return r, err
			}
		}
		now := e.now()
		t, perr := build(now)
		if perr != nil {
			return Result{}, perr
		}
		if unlockDevice == nil {
			// Creates for one terminal queue here instead of racing in Redis;
			// the commit's conditions still decide between nodes.
			unlockDevice = e.lockDevice(merchantID, t.TerminalID)
			if attempt == 0 {
				attempt-- // re-read everything now that we hold the lock
				continue
			}
		}
		c, p := newCommit(), newPending()
		curKey := ks.Current(merchantID, t.TerminalID)
		// While nothing has conflicted, trust this node's memory that the
		// terminal is free and assume the reference is unused: the commit is
		// conditional on both, so a wrong guess only costs a retry that
		// reads them. A terminal that is offline or has a current transaction
		// is always read, because a repeated reference must be answered
		// before terminal_offline or device_busy.
		status, connID, graceUntil := e.opts.Terminals.TerminalLive(t.TerminalID)
		curID, known := "", false
		if optimistic && status != protocol.TerminalOffline {
			curID, known = e.store.cur.get(merchantID, t.TerminalID)
			known = known && curID == ""
		}
		existingID := ""
		if !known {
			// The reference and the terminal's current transaction in one
			// read (both keys carry the merchant's hash tag).
			var err error
			existingID, curID, err = e.store.refAndCurrent(ctx, ks.Ref(merchantID, t.Reference), curKey, t.Reference != "")
			if err != nil {
				return Result{}, err
			}
			e.store.cur.set(merchantID, t.TerminalID, curID)
		}
		if t.Reference != "" {
			if existingID != "" {
				return e.existingByReference(ctx, merchantID, existingID, t, idemKey, fp)
			}
			c.requireValue(ks.Ref(merchantID, t.Reference), "")
			c.set(ks.Ref(merchantID, t.Reference), t.ID)
		}
		if status == protocol.TerminalOffline {
			return Result{}, protocol.Errorf(protocol.CodeTerminalOffline, "terminalId", "terminal %s is offline", t.TerminalID)
		}
		c.requireValue(curKey, curID)
		if curID != "" {
			cur, err := e.loadForUpdate(ctx, merchantID, curID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return Result{}, err
			}
			if cur != nil && cur.Active() {
				if cur.Status != protocol.StatusPending {
					return Result{}, protocol.Errorf(protocol.CodeDeviceBusy, "terminalId", "terminal %s is busy with %s (%s)", t.TerminalID, cur.ID, cur.Status)
				}
				prev, wasOpen := cur.Deadlines(), cur.HasOpenCommands()
				fx, perr := Apply(cur, EvSupersede{By: t.ID}, now, e.settings())
				if perr != nil {
					return Result{}, perr
				}
				if err := e.stage(c, p, cur, prev, wasOpen, true, fx); err != nil {
					return Result{}, err
				}
				if cur.Type == protocol.TypeRefund && (sameParent == nil || !sameParent(cur)) {
					if err := e.settleRefund(ctx, c, p, cur); err != nil {
						return Result{}, err
					}
				}
			}
		}
		t.Status, t.Version, t.CreatedAt, t.UpdatedAt = protocol.StatusPending, 1, now, now
		t.History = []protocol.HistoryEntry{{Status: protocol.StatusPending, At: now, Cause: "created"}}
		fx := Effects{Changed: true, Entered: []protocol.Status{protocol.StatusPending}}
		if status == protocol.TerminalOnline {
			// Sent right after the commit: the timeout runs from now.
			sfx, _ := Apply(t, EvSent{ConnectionID: connID}, now, e.settings())
			_ = sfx
			fx.Terminal = []any{t.StartPayment()}
		} else {
			t.GraceDeadline = graceUntil // reconnecting: wait for it, then fail terminal_unreachable
		}
		if err := e.stage(c, p, t, nil, false, false, fx); err != nil {
			return Result{}, err
		}
		c.set(curKey, t.ID)
		p.current = append(p.current, curChange{merchantID: merchantID, deviceID: t.TerminalID, id: t.ID})
		c.zadd(ks.Txns(merchantID), now.UnixMilli(), t.ID)
		if extra != nil {
			if err := extra(c, p); err != nil {
				return Result{}, err
			}
		}
		if idemKey != "" {
			created := true
			(&idemWrite{key: idemKey, fp: fp}).stage(c, e.store, merchantID, t, http.StatusCreated, &created)
		}
		res := Result{Txn: t.Wire(), Created: true, Status: http.StatusCreated}
		err := e.run(ctx, merchantID, c, p, &res, nil)
		if errors.Is(err, errConflict) {
			e.forget(merchantID, p)
			e.store.cur.forget(merchantID, t.TerminalID)
			optimistic = false
			continue
		}
		if err != nil {
			return Result{}, err
		}
		e.log.Info().Str("transactionId", t.ID).Str("merchantId", merchantID).Str("deviceId", t.TerminalID).
			Str("type", t.Type).Int64("amountMinor", t.AmountMinor).Str("currency", t.Currency).Msg("transaction created")
		return res, nil
	}
	return Result{}, errTooManyConflicts
}

// existingByReference answers a repeated reference: the same transaction
// (200, created:false) or reference_conflict if it differs.
func (e *Engine) existingByReference(ctx context.Context, merchantID, id string, want *Txn, idemKey, fp string) (Result, error) {
	t, err := e.store.Load(ctx, merchantID, id)
	if err != nil {
		return Result{}, err
	}
	if idemKey != "" {
		// A concurrent request with the same key may have won meanwhile: its
		// first response is what this one replays.
		if r, done, err := e.replayIdem(ctx, merchantID, idemKey, fp); done || err != nil {
			return r, err
		}
	}
	if t.TerminalID != want.TerminalID || t.AmountMinor != want.AmountMinor || t.Currency != want.Currency || t.Type != want.Type || t.ParentID != want.ParentID {
		return Result{}, protocol.Errorf(protocol.CodeReferenceConflict, "reference",
			"reference %q is already used by %s with another terminal, amount or currency", want.Reference, t.ID)
	}
	if idemKey != "" {
		e.storeIdemLate(ctx, merchantID, &idemWrite{key: idemKey, fp: fp}, t)
	}
	return Result{Txn: t.Wire(), Created: false, Status: http.StatusOK}, nil
}

// ActInput is a lifecycle request on an existing transaction.
type ActInput struct {
	MerchantID string
	TxnID      string
	Action     string // protocol action name, for idempotency fingerprints
	Body       any    // the request, for idempotency fingerprints
	Event      Event
	IdemKey    string
}

// Act applies a POS lifecycle request: cancel, void, capture or a
// signature answer.
func (e *Engine) Act(ctx context.Context, in ActInput) (Result, error) {
	var idem *idemWrite
	if in.IdemKey != "" {
		fp := fingerprint(in.Action, in.Body)
		if r, done, err := e.replayIdem(ctx, in.MerchantID, in.IdemKey, fp); done || err != nil {
			return r, err
		}
		idem = &idemWrite{key: in.IdemKey, fp: fp}
	}
	t, perr, err := e.update(ctx, in.MerchantID, in.TxnID, in.Event, idem)
	if ce := toClientErr(err); ce != nil {
		return Result{}, ce
	}
	if err != nil {
		return Result{}, err
	}
	if perr != nil {
		return Result{}, perr
	}
	return Result{Txn: t.Wire(), Status: http.StatusOK}, nil
}

// Get returns a transaction of the merchant.
func (e *Engine) Get(ctx context.Context, merchantID, id string) (*protocol.Transaction, error) {
	t, err := e.store.Load(ctx, merchantID, id)
	if ce := toClientErr(err); ce != nil {
		return nil, ce
	}
	if err != nil {
		return nil, err
	}
	return t.Wire(), nil
}

// ---- terminal side ----

// TerminalEvent applies a message from a terminal to its transaction. A
// transaction of another terminal is not found.
func (e *Engine) TerminalEvent(ctx context.Context, merchantID, deviceID string, body any) error {
	var err error
	e.TerminalEvents(ctx, merchantID, deviceID, []any{body}, func(_ int, e error) { err = e })
	return err
}

// TerminalEvents applies messages of one terminal, in the order it sent
// them, and calls refused with the index and error of each one not applied,
// as soon as that is known: after what the messages before it caused was
// delivered, before what the messages after it cause. Consecutive messages
// about one transaction are committed together (updateRun), with the same
// outcome as one TerminalEvent each.
func (e *Engine) TerminalEvents(ctx context.Context, merchantID, deviceID string, bodies []any, refused func(i int, err error)) {
	for i := 0; i < len(bodies); {
		id, ev, err := terminalEvent(bodies[i])
		if err != nil {
			refused(i, err)
			i++
			continue
		}
		evs := []Event{ev}
		for j := i + 1; j < len(bodies); j++ {
			id2, ev2, err := terminalEvent(bodies[j])
			if err != nil || id2 != id {
				break
			}
			evs = append(evs, ev2)
		}
		if e.work.holds(merchantID, id) {
			// Events that arrived earlier wait to be applied (or a commit
			// of the transaction is being resolved): these go after them.
			e.work.queue(merchantID, deviceID, id, evs, false)
			for k := i; k < i+len(evs); k++ {
				refused(k, ErrUnavailable)
			}
			i += len(evs)
			continue
		}
		n, perr, err := e.terminalRun(ctx, merchantID, deviceID, id, evs)
		switch {
		case perr != nil: // events before it are applied; those after it get a run of their own
			refused(i+n, perr)
			i += n + 1
		case err != nil: // nothing of the run was committed (or, if its answer was lost, it may have been)
			if errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrOutcomeUnknown) {
				// The hub keeps what the terminal sent and applies it once
				// Redis answers, in order (a lost commit is retried by its
				// resolver if it was not applied). The terminal, told
				// unavailable, sends it again too; the repeat is harmless.
				e.work.queue(merchantID, deviceID, id, evs, false)
			}
			for k := i; k < i+len(evs); k++ {
				refused(k, err)
			}
			i += len(evs)
		default:
			i += len(evs)
		}
	}
}

// terminalEvent is the transaction and event of a terminal's message.
func terminalEvent(body any) (string, Event, error) {
	switch m := body.(type) {
	case *protocol.CommandReceived:
		return m.TransactionID, EvCommandReceived{}, nil
	case *protocol.PaymentProgress:
		return m.TransactionID, EvProgress{Stage: m.Stage}, nil
	case *protocol.SignatureRequiredEvent:
		return m.TransactionID, EvSignatureRequired{}, nil
	case *protocol.PaymentResult:
		return m.TransactionID, EvResult{Result: *m}, nil
	case *protocol.VoidResult:
		return m.TransactionID, EvVoidResult{OK: *m.OK, ErrorMessage: m.ErrorMessage}, nil
	case *protocol.CaptureResult:
		amt := int64(0)
		if m.AmountMinor != nil {
			amt = *m.AmountMinor
		}
		return m.TransactionID, EvCaptureResult{OK: *m.OK, AmountMinor: amt, ErrorMessage: m.ErrorMessage}, nil
	}
	return "", nil, protocol.Errorf(protocol.CodeUnknownAction, "action", "unexpected message")
}

// terminalRun applies evs, a terminal's consecutive events about
// transaction id. It returns how many were applied and, when one was
// refused, its refusal (the events after it are not applied); or an error
// that is every event's (the transaction is not the terminal's, or the
// store failed).
func (e *Engine) terminalRun(ctx context.Context, merchantID, deviceID, id string, evs []Event) (int, *protocol.Error, error) {
	t, err := e.loadForUpdate(ctx, merchantID, id)
	if errors.Is(err, ErrNotFound) || (err == nil && t.TerminalID != deviceID) {
		return 0, nil, protocol.Errorf(protocol.CodeTransactionNotFound, "transactionId", "no such transaction for this terminal")
	}
	if err != nil {
		return 0, nil, err
	}
	_, n, perr, err := e.updateRun(ctx, merchantID, id, evs, nil, deviceID)
	if err != nil {
		return 0, nil, err
	}
	return n, perr, nil
}

// TerminalConnected resumes a device's transactions after it (re)connects
// and returns every command still open for it (CONTRACT §6), oldest
// transaction first, for the caller to send.
func (e *Engine) TerminalConnected(ctx context.Context, merchantID, deviceID, connID string) ([]any, error) {
	// Not during a create for the device (which holds this lock until it
	// has sent its command): the hub registers the connection before it
	// calls this, so a sale committed meanwhile is either sent live before
	// the open commands are read, and the hub sends it once, or committed
	// after, and not among them.
	defer e.lockDevice(merchantID, deviceID)()
	ids, err := e.store.openIDs(ctx, merchantID, deviceID)
	if err != nil {
		return nil, err
	}
	txns := make([]*Txn, 0, len(ids))
	for _, id := range ids {
		// Back, and sent if it never was, in one commit: a PENDING sale
		// that waited for the terminal swaps its grace deadline for its
		// payment deadline at once, never left with neither.
		t, _, _, err := e.updateRun(ctx, merchantID, id, []Event{EvTerminalBack{ConnectionID: connID}, EvSent{ConnectionID: connID}}, nil, "")
		if errors.Is(err, ErrNotFound) {
			e.store.rdb.SRem(ctx, e.store.keys.Open(merchantID, deviceID), id)
			continue
		}
		if err != nil {
			return nil, err
		}
		txns = append(txns, t)
	}
	sortByCreated(txns)
	var cmds []any
	for _, t := range txns {
		cmds = append(cmds, t.OpenCommands()...)
	}
	return cmds, nil
}

// TerminalDropped starts the grace period of every transaction the device
// was working on.
func (e *Engine) TerminalDropped(ctx context.Context, merchantID, deviceID string, graceUntil time.Time) error {
	ids, err := e.store.openIDs(ctx, merchantID, deviceID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, _, err := e.update(ctx, merchantID, id, EvTerminalDropped{GraceUntil: graceUntil}, nil); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

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

func sortByCreated(ts []*Txn) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].CreatedAt.Before(ts[j-1].CreatedAt); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// fingerprint identifies a request body for Idempotency-Key reuse checks.
func fingerprint(action string, body any) string {
	b, _ := json.Marshal(body)
	h := sha256.Sum256(append([]byte(action+"\n"), b...))
	return hex.EncodeToString(h[:])
}

// String makes Result readable in test failures.
func (r Result) String() string {
	if r.Txn == nil {
		return "Result{}"
	}
	return fmt.Sprintf("Result{%s %s created=%v %d}", r.Txn.ID, r.Txn.Status, r.Created, r.Status)
}

// DevicesWithWork lists the merchant's devices that have transactions with
// open commands (work in flight or owed to the terminal).
func (e *Engine) DevicesWithWork(ctx context.Context, merchantID string, devices []string) ([]string, error) {
	pipe := e.store.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(devices))
	for i, d := range devices {
		cards[i] = pipe.SCard(ctx, e.store.keys.Open(merchantID, d))
	}
	if len(devices) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, storeErr(err)
		}
	}
	var out []string
	for i, d := range devices {
		if cards[i].Val() > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

type replyKey struct{}

// WithReply asks the engine to call f with the request's result right after
// its commit and before any message it caused is delivered, so that a client
// always sees the reply to its request before the outcome (CONTRACT §5).
// f is called at most once, in the caller's goroutine.
func WithReply(ctx context.Context, f func(Result)) context.Context {
	return context.WithValue(ctx, replyKey{}, f)
}

func replyHook(ctx context.Context) func(Result) {
	f, _ := ctx.Value(replyKey{}).(func(Result))
	return f
}
