package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/termhub/termhub/protocol"
)

// CreateInput is a sale request.
type CreateInput struct {
	MerchantID string
	APIKeyID   string
	Req        *protocol.PaymentRequest
	IdemKey    string
}

// Create starts a sale (docs/protocol.md#transactions): idempotency by reference and
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
	return e.createTxn(ctx, in.MerchantID, in.IdemKey, fp, &saleCreation{e: e, in: in, device: device})
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
	return e.createTxn(ctx, in.MerchantID, in.IdemKey, fp, &refundCreation{e: e, in: in})
}

// existingRefund answers a refund whose reference is already used: the same
// refund (200, created:false) or reference_conflict.
func (e *Engine) existingRefund(ctx context.Context, merchantID string, req *protocol.RefundRequest) (Result, bool, error) {
	id, err := e.store.refID(ctx, merchantID, req.Reference)
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
	return Result{Txn: t.Wire(), Created: false, Status: protocol.ResultStatus(false)}, true, nil
}

// creation is what differs between creating a sale and a refund; createTxn
// does the rest.
type creation interface {
	// build returns the new transaction, not yet saved. It is called once
	// per attempt, so that every attempt starts from what Redis holds.
	build(ctx context.Context, now time.Time) (*Txn, *protocol.Error)
	// stageMore adds the commit's writes beyond the new transaction's.
	stageMore(c *commit, p *pending) error
	// settleSuperseded settles a superseded PENDING refund when this
	// creation holds what it reserved from, and reports whether it did.
	settleSuperseded(superseded *Txn) bool
}

// saleCreation creates a sale on a resolved device.
type saleCreation struct {
	e      *Engine
	in     CreateInput
	device string
}

func (s *saleCreation) build(_ context.Context, _ time.Time) (*Txn, *protocol.Error) {
	req, e := s.in.Req, s.e
	return &Txn{APIKeyID: s.in.APIKeyID, Transaction: protocol.Transaction{
		ID: newTxnID(), MerchantID: s.in.MerchantID, TerminalID: s.device, Type: protocol.TypeSale,
		AmountMinor: req.Minor(), Amount: protocol.FormatAmount(req.Minor(), req.Currency), Currency: req.Currency,
		Reference: req.Reference, CaptureMode: req.CaptureMode, Description: req.Description,
		PrintReceipt: req.PrintReceipt == nil || *req.PrintReceipt, TimeoutSeconds: e.timeoutSeconds(req.TimeoutSeconds),
	}}, nil
}

func (*saleCreation) stageMore(*commit, *pending) error { return nil }

func (*saleCreation) settleSuperseded(*Txn) bool { return false }

// refundCreation creates a refund of a completed sale. build loads the sale
// and reserves the refund's amount on it; the sale is saved in the same
// commit as the refund (stageMore).
type refundCreation struct {
	e      *Engine
	in     RefundInput
	parent *Txn  // the sale, as build left it
	was    prior // the sale as loaded
}

func (r *refundCreation) build(ctx context.Context, _ time.Time) (*Txn, *protocol.Error) {
	e, req := r.e, r.in.Req
	p, err := e.store.Load(ctx, r.in.MerchantID, req.TransactionID)
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
	r.parent, r.was = p, before(p)
	p.ReservedRefundMinor += amt
	return &Txn{APIKeyID: r.in.APIKeyID, Transaction: protocol.Transaction{
		ID: newTxnID(), MerchantID: r.in.MerchantID, TerminalID: p.TerminalID, Type: protocol.TypeRefund, ParentID: p.ID,
		AmountMinor: amt, Amount: protocol.FormatAmount(amt, p.Currency), Currency: p.Currency,
		Reference: req.Reference, CaptureMode: protocol.CaptureAuto, Description: req.Reason,
		PrintReceipt: true, TimeoutSeconds: e.timeoutSeconds(nil),
	}}, nil
}

func (r *refundCreation) stageMore(c *commit, p *pending) error {
	return r.e.stage(c, p, r.parent, r.was.deadlines, r.was.open, r.was.active, Effects{Changed: true})
}

// settleSuperseded releases a superseded PENDING refund of the same sale
// on the sale object this commit already holds.
func (r *refundCreation) settleSuperseded(superseded *Txn) bool {
	if r.parent == nil || superseded.ParentID != r.parent.ID {
		return false
	}
	r.parent.ReservedRefundMinor = max(r.parent.ReservedRefundMinor-superseded.AmountMinor, 0)
	return true
}

// createTxn is the shared path of Create and Refund. Creates for one
// terminal queue on its device lock instead of racing in Redis (the
// commit's conditions still decide between nodes). The device is known
// only once the transaction is built, so a first build finds the lock, and
// every attempt then reads and builds again under it.
func (e *Engine) createTxn(ctx context.Context, merchantID, idemKey, fp string, cr creation) (Result, error) {
	if idemKey != "" {
		if r, done, err := e.replayIdem(ctx, merchantID, idemKey, fp); done || err != nil {
			return r, err
		}
	}
	first, perr := cr.build(ctx, e.now())
	if perr != nil {
		return Result{}, perr
	}
	defer e.lockDevice(merchantID, first.TerminalID)()
	optimistic := true
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if idemKey != "" {
			if r, done, err := e.replayIdem(ctx, merchantID, idemKey, fp); done || err != nil {
				return r, err
			}
		}
		now := e.now()
		t, perr := cr.build(ctx, now)
		if perr != nil {
			return Result{}, perr
		}
		res, err := e.createAttempt(ctx, merchantID, idemKey, fp, cr, t, now, optimistic)
		if errors.Is(err, errConflict) {
			optimistic = false
			continue
		}
		return res, err
	}
	return Result{}, errTooManyConflicts
}

// createAttempt stages and commits the creation of t. It returns
// errConflict, having forgotten what the commit touched, when another
// writer got in first. optimistic: nothing has conflicted yet.
func (e *Engine) createAttempt(ctx context.Context, merchantID, idemKey, fp string, cr creation, t *Txn, now time.Time, optimistic bool) (Result, error) {
	ks := e.store.keys
	c, p := newCommit(), newPending()
	curKey := ks.Current(merchantID, t.TerminalID)
	status, connID, graceUntil := e.opts.Terminals.TerminalLive(t.TerminalID)
	existingID, curID, err := e.readSlot(ctx, merchantID, t, optimistic && status != protocol.TerminalOffline)
	if err != nil {
		return Result{}, err
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
		if err := e.supersede(ctx, c, p, cr, t, curID, now); err != nil {
			return Result{}, err
		}
	}
	fx := e.open(t, now, status, connID, graceUntil)
	if err := e.stage(c, p, t, nil, false, false, fx); err != nil {
		return Result{}, err
	}
	c.set(curKey, t.ID)
	p.current = append(p.current, curChange{merchantID: merchantID, deviceID: t.TerminalID, id: t.ID})
	c.zadd(ks.Txns(merchantID), now.UnixMilli(), t.ID)
	if err := cr.stageMore(c, p); err != nil {
		return Result{}, err
	}
	if idemKey != "" {
		created := true
		(&idemWrite{key: idemKey, fp: fp}).stage(c, e.store, merchantID, t, protocol.ResultStatus(true), &created)
	}
	res := Result{Txn: t.Wire(), Created: true, Status: protocol.ResultStatus(true)}
	err = e.run(ctx, merchantID, c, p, &res, nil)
	if errors.Is(err, errConflict) {
		e.forget(merchantID, p)
		e.store.cur.forget(merchantID, t.TerminalID)
		return Result{}, err
	}
	if err != nil {
		return Result{}, err
	}
	e.log.Info().Str("transactionId", t.ID).Str("merchantId", merchantID).Str("deviceId", t.TerminalID).
		Str("type", t.Type).Int64("amountMinor", t.AmountMinor).Str("currency", t.Currency).Msg("transaction created")
	return res, nil
}

// readSlot returns the transaction that uses t's reference, if any, and
// the terminal's current transaction ("" for none). With trustFree, this
// node's memory that the terminal is free is trusted and the reference
// assumed unused: the commit is conditional on both, so a wrong guess only
// costs a retry that reads them. The caller trusts only while nothing has
// conflicted and the terminal is not offline, because a repeated reference
// must be answered before terminal_offline or device_busy.
func (e *Engine) readSlot(ctx context.Context, merchantID string, t *Txn, trustFree bool) (existingID, curID string, err error) {
	if trustFree {
		if id, known := e.store.cur.get(merchantID, t.TerminalID); known && id == "" {
			return "", "", nil
		}
	}
	existingID, curID, err = e.store.refAndCurrent(ctx, merchantID, t.Reference, t.TerminalID)
	if err != nil {
		return "", "", err
	}
	e.store.cur.set(merchantID, t.TerminalID, curID)
	return existingID, curID, nil
}

// supersede stages the end of the terminal's current transaction curID
// for new transaction t: a PENDING one is superseded (a refund's
// reservation released), anything further along makes the terminal busy.
func (e *Engine) supersede(ctx context.Context, c *commit, p *pending, cr creation, t *Txn, curID string, now time.Time) error {
	cur, err := e.loadForUpdate(ctx, t.MerchantID, curID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if cur == nil || !cur.Active() {
		return nil
	}
	if cur.Status != protocol.StatusPending {
		return protocol.Errorf(protocol.CodeDeviceBusy, "terminalId", "terminal %s is busy with %s (%s)", t.TerminalID, cur.ID, cur.Status)
	}
	prev, wasOpen := cur.Deadlines(), cur.HasOpenCommands()
	fx, perr := Apply(cur, EvSupersede{By: t.ID}, now, e.settings())
	if perr != nil {
		return perr
	}
	if err := e.stage(c, p, cur, prev, wasOpen, true, fx); err != nil {
		return err
	}
	if cur.Type == protocol.TypeRefund && !cr.settleSuperseded(cur) {
		return e.settleRefund(ctx, c, p, cur)
	}
	return nil
}

// open makes t a new PENDING transaction. On an online terminal it is sent
// right after the commit, so its payment timeout runs from now; a
// reconnecting terminal is waited for until its grace period ends, then
// the payment fails terminal_unreachable.
func (e *Engine) open(t *Txn, now time.Time, status TerminalStatus, connID string, graceUntil time.Time) Effects {
	t.Status, t.Version, t.CreatedAt, t.UpdatedAt = protocol.StatusPending, 1, now, now
	t.History = []protocol.HistoryEntry{{Status: protocol.StatusPending, At: now, Cause: "created"}}
	fx := Effects{Changed: true, Entered: []protocol.Status{protocol.StatusPending}}
	if status == protocol.TerminalOnline {
		_, _ = Apply(t, EvSent{ConnectionID: connID}, now, e.settings())
		fx.Terminal = []TerminalCommand{t.StartPayment()}
	} else {
		t.GraceDeadline = graceUntil
	}
	return fx
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
	return Result{Txn: t.Wire(), Created: false, Status: protocol.ResultStatus(false)}, nil
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
