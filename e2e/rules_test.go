package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// End-to-end tests of the payment rules of docs/protocol.md#transactions, docs/protocol.md#auto-void-reason-codes, mostly over
// the POS and terminal WebSockets. rest_test.go covers the same rules where
// HTTP adds something of its own (statuses, headers, the list API).

// ---- reference idempotency ----

func TestReferenceIdempotencyWS(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	u1 := e.terminal("U1")
	pos := e.pos("pk1")

	first := sell(t, pos, "T1", 1250, "ref-1")
	if first.Created == nil || !*first.Created || first.Transaction.Status != protocol.StatusPending {
		t.Fatalf("first paymentResponse %+v, want created:true PENDING", first)
	}
	id := first.Transaction.ID

	again := sell(t, pos, "T1", 1250, "ref-1")
	if again.Created == nil || *again.Created || again.Transaction.ID != id || again.Transaction.Status != protocol.StatusPending {
		t.Fatalf("same reference again: %+v created=%v, want %s created:false", again.Transaction, again.Created, id)
	}
	// The same order expressed as a decimal amount is the same request.
	dec := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amount": "12.50", "currency": "usd", "reference": "ref-1"})
	if dec.Created == nil || *dec.Created || dec.Transaction.ID != id {
		t.Fatalf("same reference with amount \"12.50\": %+v created=%v, want %s created:false", dec.Transaction, dec.Created, id)
	}

	// Whatever its state: a DISPATCHED sale is returned, not device_busy.
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id)
	if r := sell(t, pos, "T1", 1250, "ref-1"); *r.Created || r.Transaction.ID != id || r.Transaction.Status != protocol.StatusDispatched {
		t.Fatalf("same reference while DISPATCHED: %+v created=%v", r.Transaction, *r.Created)
	}

	// Same reference, another amount, terminal or currency.
	for _, f := range []map[string]any{
		{"terminalId": "T1", "amountMinor": 1300, "currency": "USD", "reference": "ref-1"},
		{"terminalId": "T2", "amountMinor": 1250, "currency": "USD", "reference": "ref-1"},
		{"terminalId": "T1", "amountMinor": 1250, "currency": "EUR", "reference": "ref-1"},
	} {
		wsErr(t, pos, "payment", f, protocol.CodeReferenceConflict, "reference")
	}

	// Final: still the same transaction.
	approve(t, term, id)
	posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if r := sell(t, pos, "T1", 1250, "ref-1"); *r.Created || r.Transaction.ID != id || r.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("same reference after COMPLETED: %+v created=%v", r.Transaction, *r.Created)
	}

	// The reference is the merchant's, not the API key's...
	sib := e.pos("pk1b")
	if r := sell(t, sib, "T1", 1250, "ref-1"); *r.Created || r.Transaction.ID != id {
		t.Fatalf("same reference from pk1b: %+v created=%v, want %s created:false", r.Transaction, *r.Created, id)
	}
	// ...and another merchant may use the same one for its own sale.
	other := e.pos("pk2")
	r := sell(t, other, "U1", 1250, "ref-1")
	if !*r.Created || r.Transaction.ID == id || r.Transaction.MerchantID != "m2" || r.Transaction.TerminalID != "U1" {
		t.Fatalf("m2's ref-1: %+v created=%v, want a new m2 transaction", r.Transaction, *r.Created)
	}
	startPayment(t, u1, r.Transaction.ID)
}

func TestIdempotencyKeyWS(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	body := map[string]any{"terminalId": "T1", "amountMinor": 500, "currency": "USD", "reference": "idem-ws-1", "idempotencyKey": "k-ws-1"}
	first := wsOK(t, pos, "payment", body)
	if first.Created == nil || !*first.Created {
		t.Fatalf("first: created=%v", first.Created)
	}
	id := first.Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id)

	// A replay answers the first response (created:true, PENDING v1), not
	// the transaction as it now stands.
	replay := wsOK(t, pos, "payment", body)
	if replay.Created == nil || !*replay.Created || replay.Transaction.ID != id ||
		replay.Transaction.Status != protocol.StatusPending || replay.Transaction.Version != 1 {
		t.Fatalf("replay: %+v created=%v, want the first response (created:true, PENDING v1)", replay.Transaction, replay.Created)
	}

	// The same key with another body.
	other := map[string]any{"terminalId": "T1", "amountMinor": 600, "currency": "USD", "reference": "idem-ws-2", "idempotencyKey": "k-ws-1"}
	wsErr(t, pos, "payment", other, protocol.CodeIdempotencyKeyReused, "idempotencyKey")

	// Lifecycle requests take the field too.
	c1 := wsOK(t, pos, "cancel", map[string]any{"transactionId": id, "idempotencyKey": "k-ws-cancel"})
	if c1.Transaction.Status != protocol.StatusCancelled {
		t.Fatalf("cancel: %s", c1.Transaction.Status)
	}
	command(t, term, protocol.ActionCancelPayment, id)
	// A late approval voids it; the replayed cancel still answers CANCELLED.
	approve(t, term, id)
	posEvent(t, pos, protocol.ActionPaymentVoided, id)
	c2 := wsOK(t, pos, "cancel", map[string]any{"transactionId": id, "idempotencyKey": "k-ws-cancel"})
	if c2.Transaction.Status != protocol.StatusCancelled || c2.Transaction.Version != c1.Transaction.Version {
		t.Fatalf("replayed cancel: %s v%d, want the first response %s v%d", c2.Transaction.Status, c2.Transaction.Version, c1.Transaction.Status, c1.Transaction.Version)
	}
	wsErr(t, pos, "void", map[string]any{"transactionId": id, "idempotencyKey": "k-ws-cancel"}, protocol.CodeIdempotencyKeyReused, "idempotencyKey")
}

// ---- superseding and the per-device lock ----

func TestSupersedePendingSale(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	a := sell(t, pos, "T1", 1000, "sup-a").Transaction.ID
	if m := next(t, term); m.Action != protocol.ActionStartPayment {
		t.Fatalf("terminal got %s, want startPayment", m.Raw)
	}
	// The terminal has not sent commandReceived: A is still PENDING.
	rb := sell(t, pos, "T1", 2000, "sup-b")
	b := rb.Transaction.ID
	if !*rb.Created || rb.Transaction.Status != protocol.StatusPending {
		t.Fatalf("B: %+v", rb.Transaction)
	}

	ev := posEvent(t, pos, protocol.ActionPaymentComplete, a)
	if ev.Transaction.Status != protocol.StatusSuperseded || ev.Version != 2 || ev.Transaction.CompletedAt == nil || ev.TerminalID != "T1" {
		t.Fatalf("paymentComplete of A: %+v v%d, want SUPERSEDED v2", ev.Transaction, ev.Version)
	}
	// The terminal is told to drop A before it is given B.
	var cmd protocol.TerminalCommand
	if m := next(t, term); m.Action != protocol.ActionCancelPayment || m.Decode(&cmd) != nil || cmd.TransactionID != a {
		t.Fatalf("terminal got %s, want cancelPayment of %s", m.Raw, a)
	}
	var sp protocol.StartPayment
	if m := next(t, term); m.Action != protocol.ActionStartPayment || m.Decode(&sp) != nil || sp.TransactionID != b || sp.AmountMinor != 2000 {
		t.Fatalf("terminal got %s, want startPayment of %s", m.Raw, b)
	}
	if got := e.get(t, "pk1", a); got.Status != protocol.StatusSuperseded {
		t.Fatalf("GET A: %s", got.Status)
	}

	// A late approval of A is voided.
	approve(t, term, a)
	v := posEvent(t, pos, protocol.ActionPaymentVoided, a)
	if v.ReasonCode != protocol.VoidLateAfterSupersede || v.Transaction.Status != protocol.StatusVoided || v.OriginalPaymentResponse == nil {
		t.Fatalf("paymentVoided of A: %+v", v)
	}
	command(t, term, protocol.ActionVoidPayment, a)

	// B is the terminal's current sale and can be taken.
	termSend(t, term, "commandReceived", b, nil)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, b); ev.Transaction.Status != protocol.StatusDispatched {
		t.Fatalf("B: %s", ev.Transaction.Status)
	}
}

func TestDeviceBusy(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	a := dispatched(t, pos, term, "T1", 1000, "busy-a")
	wsErr(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 10, "currency": "USD", "reference": "busy-b"}, protocol.CodeDeviceBusy, "terminalId")
	e.doErr(t, "pk1b", "POST", "/v1/payments", sale("T1", 10, "busy-c"), nil, http.StatusConflict, protocol.CodeDeviceBusy, "terminalId")

	termSend(t, term, "paymentProgress", a, map[string]any{"stage": "pin_entry"})
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, a)
	wsErr(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 10, "currency": "USD", "reference": "busy-d"}, protocol.CodeDeviceBusy, "terminalId")
	if got := e.get(t, "pk1", a); got.Status != protocol.StatusInProgress {
		t.Fatalf("A after refused sales: %s", got.Status)
	}
	// The refused references were not taken.
	if p, _ := e.list(t, "pk1", "?reference=busy-b"); len(p.Data) != 0 {
		t.Fatalf("busy-b was stored: %+v", p.Data)
	}

	approve(t, term, a)
	posEvent(t, pos, protocol.ActionPaymentComplete, a)
	if r := sell(t, pos, "T1", 10, "busy-b"); !*r.Created {
		t.Fatal("a sale after the terminal is free was not created")
	}
}

// ---- offline and reconnecting terminals ----

func TestOfflineTerminal(t *testing.T) {
	e := newEnv(t)
	pos := e.pos("pk1")
	wsErr(t, pos, "payment", map[string]any{"terminalId": "T2", "amountMinor": 100, "currency": "USD", "reference": "off-1"}, protocol.CodeTerminalOffline, "terminalId")
	e.doErr(t, "pk1", "POST", "/v1/payments", sale("T2", 100, "off-2"), nil, http.StatusUnprocessableEntity, protocol.CodeTerminalOffline, "terminalId")
	if p, _ := e.list(t, "pk1", ""); len(p.Data) != 0 {
		t.Fatalf("a refused sale was stored: %+v", p.Data)
	}
}

// dropT1 closes term without a close handshake and waits until the hub has
// T1 reconnecting.
func dropT1(t *testing.T, e *env, term interface{ CloseNow() error }) {
	t.Helper()
	_ = term.CloseNow()
	kit.Eventually(t, "T1 reconnecting", func() bool { s, _, _ := e.App.Hub.TerminalLive("T1"); return s == protocol.TerminalReconnecting })
}

func TestReconnectingTerminalTakesPaymentOnReturn(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	dropT1(t, e, term)

	r := sell(t, pos, "T1", 700, "rc-1")
	id := r.Transaction.ID
	if !*r.Created || r.Transaction.Status != protocol.StatusPending {
		t.Fatalf("sale for a reconnecting terminal: %+v", r.Transaction)
	}

	e.advance(t, 30*time.Second, pos)
	back := e.terminal("T1")
	sp := startPayment(t, back, id)
	if sp.AmountMinor != 700 || sp.Type != protocol.TypeSale || sp.Reference != "rc-1" {
		t.Fatalf("startPayment after reconnect: %+v", sp)
	}
	termSend(t, back, "commandReceived", id, nil)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id); ev.Transaction.Status != protocol.StatusDispatched || ev.Transaction.ConnectionID != back.ConnectionID() {
		t.Fatalf("after commandReceived: %+v", ev.Transaction)
	}
	// The grace period it was created under no longer applies.
	e.advance(t, 45*time.Second, pos, back)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusDispatched {
		t.Fatalf("75 s later: %s %s, want DISPATCHED", got.Status, got.ErrorCode)
	}
	approve(t, back, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("ended %s", ev.Transaction.Status)
	}
}

func TestReconnectingTerminalNeverReturns(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	dropT1(t, e, term)

	id := sell(t, pos, "T1", 700, "rc-2").Transaction.ID
	e.advance(t, 59*time.Second, pos)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusPending {
		t.Fatalf("59 s into the grace period: %s", got.Status)
	}
	e.advance(t, time.Second, pos)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusFailed || ev.Transaction.ErrorCode != protocol.TxnErrTerminalUnreachable {
		t.Fatalf("after the grace period: %s %q, want FAILED terminal_unreachable", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	// The terminal is offline now.
	wsErr(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD", "reference": "rc-3"}, protocol.CodeTerminalOffline, "terminalId")
}

// ---- terminal id resolution ----

func TestTerminalIDResolution(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	u1 := e.terminal("U1")
	pos := e.pos("pk1")

	// Legacy: the live connection id of T1.
	r := sell(t, pos, term.ConnectionID(), 300, "res-1")
	if r.Transaction.TerminalID != "T1" {
		t.Fatalf("sale by connection id: terminalId %q, want T1", r.Transaction.TerminalID)
	}
	startPayment(t, term, r.Transaction.ID)

	// Another merchant's device, by device id and by connection id, is not found.
	// (The references do not embed the random connection id: a run of its
	// hex digits could look like a card number, which is refused.)
	for i, tid := range []string{"U1", u1.ConnectionID(), "T9", "conn_000000000000000000000000"} {
		wsErr(t, pos, "payment", map[string]any{"terminalId": tid, "amountMinor": 1, "currency": "USD", "reference": fmt.Sprintf("res-x-%d", i)}, protocol.CodeTerminalNotFound, "terminalId")
		e.doErr(t, "pk1", "POST", "/v1/payments", sale(tid, 1, fmt.Sprintf("res-y-%d", i)), nil, http.StatusNotFound, protocol.CodeTerminalNotFound, "terminalId")
	}
	// A connection id that is no longer live resolves to nothing.
	oldConn := term.ConnectionID()
	back := e.terminal("T1") // displaces the first connection
	wsErr(t, pos, "payment", map[string]any{"terminalId": oldConn, "amountMinor": 1, "currency": "USD", "reference": "res-old"}, protocol.CodeTerminalNotFound, "terminalId")
	term = back

	// The terminal list and GET /v1/terminals/{id} agree.
	e.doErr(t, "pk1", "GET", "/v1/terminals/U1", nil, nil, http.StatusNotFound, protocol.CodeTerminalNotFound, "id")
	var got struct{ Terminal protocol.TerminalInfo }
	if resp := e.do(t, "pk1", "GET", "/v1/terminals/"+term.ConnectionID(), nil, nil); resp.Status != 200 || resp.Decode(&got) != nil || got.Terminal.TerminalID != "T1" {
		t.Fatalf("GET /v1/terminals/<connectionId>: %d %s", resp.Status, resp.Body)
	}
}

// ---- cancel ----

func TestCancelBeforeCard(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	// PENDING.
	a := sell(t, pos, "T1", 100, "can-a").Transaction.ID
	startPayment(t, term, a)
	c := wsOK(t, pos, "cancel", map[string]any{"transactionId": a})
	if c.Action != "cancelResponse" || c.Transaction.Status != protocol.StatusCancelled || c.Transaction.CompletedAt == nil {
		t.Fatalf("cancel PENDING: %s %+v", c.Action, c.Transaction)
	}
	command(t, term, protocol.ActionCancelPayment, a)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, a); ev.Transaction.Status != protocol.StatusCancelled {
		t.Fatalf("paymentComplete: %s", ev.Transaction.Status)
	}
	// Cancelling again answers the same.
	again := wsOK(t, pos, "cancel", map[string]any{"transactionId": a})
	if again.Transaction.Status != protocol.StatusCancelled || again.Transaction.Version != c.Transaction.Version {
		t.Fatalf("cancel again: %s v%d, want CANCELLED v%d", again.Transaction.Status, again.Transaction.Version, c.Transaction.Version)
	}
	// The terminal's own "cancelled" result is a duplicate.
	termSend(t, term, "paymentResult", a, map[string]any{"outcome": "cancelled"})
	command(t, term, protocol.ActionResultAck, a)
	if got := e.get(t, "pk1", a); got.Status != protocol.StatusCancelled || got.Version != c.Transaction.Version {
		t.Fatalf("after the terminal's cancelled result: %s v%d", got.Status, got.Version)
	}

	// DISPATCHED; the terminal is free at once.
	b := dispatched(t, pos, term, "T1", 200, "can-b")
	rb := e.doTxn(t, "pk1", "POST", "/v1/transactions/"+b+"/cancel", nil, nil, http.StatusOK)
	if rb.Transaction.Status != protocol.StatusCancelled {
		t.Fatalf("cancel DISPATCHED: %s", rb.Transaction.Status)
	}
	command(t, term, protocol.ActionCancelPayment, b)
	posEvent(t, pos, protocol.ActionPaymentComplete, b)
	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+b+"/cancel", nil, nil, http.StatusOK)

	// A late approval of the cancelled sale is voided.
	approve(t, term, b)
	v := posEvent(t, pos, protocol.ActionPaymentVoided, b)
	if v.ReasonCode != protocol.VoidLateAfterCancel || v.Transaction.Status != protocol.StatusVoided || v.Reason == "" ||
		v.OriginalPaymentResponse == nil || v.OriginalPaymentResponse.Outcome != "approved" || v.Version != rb.Transaction.Version+1 {
		t.Fatalf("paymentVoided: %+v", v)
	}
	if vp := command(t, term, protocol.ActionVoidPayment, b); vp.Reason == "" {
		t.Fatalf("voidPayment without a reason: %+v", vp)
	}

	// From IN_PROGRESS on, cancel is refused.
	d := dispatched(t, pos, term, "T1", 300, "can-d")
	termSend(t, term, "paymentProgress", d, map[string]any{"stage": "card_presented"})
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, d)
	wsErr(t, pos, "cancel", map[string]any{"transactionId": d}, protocol.CodeInvalidState, "transactionId")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+d+"/cancel", nil, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")
	if got := e.get(t, "pk1", d); got.Status != protocol.StatusInProgress {
		t.Fatalf("after refused cancel: %s", got.Status)
	}
	// And after a final state other than CANCELLED.
	approve(t, term, d)
	posEvent(t, pos, protocol.ActionPaymentComplete, d)
	wsErr(t, pos, "cancel", map[string]any{"transactionId": d}, protocol.CodeInvalidState, "transactionId")
}

func TestCancelWhileAwaitingReconnect(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	a := dispatched(t, pos, term, "T1", 100, "car-a")
	dropT1(t, e, term)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, a); ev.Transaction.Status != protocol.StatusAwaitingReconnect {
		t.Fatalf("after the drop: %s", ev.Transaction.Status)
	}
	if c := wsOK(t, pos, "cancel", map[string]any{"transactionId": a}); c.Transaction.Status != protocol.StatusCancelled {
		t.Fatalf("cancel AWAITING_RECONNECT (was DISPATCHED): %s", c.Transaction.Status)
	}
	posEvent(t, pos, protocol.ActionPaymentComplete, a)
	// The cancelPayment waits for the terminal; no startPayment is re-sent.
	back := e.terminal("T1")
	var cmd protocol.TerminalCommand
	if m := next(t, back); m.Action != protocol.ActionCancelPayment || m.Decode(&cmd) != nil || cmd.TransactionID != a {
		t.Fatalf("first command after reconnect: %s, want cancelPayment of %s", m.Raw, a)
	}
	// A cancelled result closes it; the grace period never fails it.
	termSend(t, back, "paymentResult", a, map[string]any{"outcome": "cancelled"})
	command(t, back, protocol.ActionResultAck, a)
	e.advance(t, 61*time.Second, pos, back)
	if got := e.get(t, "pk1", a); got.Status != protocol.StatusCancelled {
		t.Fatalf("after the grace period: %s", got.Status)
	}
}

// ---- refunds ----

func TestRefunds(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	s := completedSale(t, pos, term, "T1", 1000, "rf-sale")

	// Partial refund on the same terminal.
	r1 := wsOK(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 300, "reason": "damaged"})
	rf := r1.Transaction
	if r1.Action != "refundResponse" || rf.Type != protocol.TypeRefund || rf.ParentID != s || rf.ID == s || rf.Status != protocol.StatusPending ||
		rf.AmountMinor != 300 || rf.Amount != "3.00" || rf.TerminalID != "T1" || rf.Currency != "USD" {
		t.Fatalf("refundResponse: %s %+v", r1.Action, rf)
	}
	sp := startPayment(t, term, rf.ID)
	if sp.Type != protocol.TypeRefund || sp.AmountMinor != 300 || sp.Currency != "USD" {
		t.Fatalf("startPayment of the refund: %+v", sp)
	}
	// While it runs, its 300 count against what is left: 701 is too much.
	wsErr(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 701}, protocol.CodeRefundExceedsAmount, "amountMinor")
	if got := e.get(t, "pk1", s); got.RefundedAmountMinor != 0 {
		t.Fatalf("refunded before the refund completed: %d", got.RefundedAmountMinor)
	}
	termSend(t, term, "commandReceived", rf.ID, nil)
	approve(t, term, rf.ID)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, rf.ID); ev.Transaction.Status != protocol.StatusCompleted || ev.Transaction.Type != protocol.TypeRefund {
		t.Fatalf("refund ended %+v", ev.Transaction)
	}
	if got := e.get(t, "pk1", s); got.RefundedAmountMinor != 300 || got.Status != protocol.StatusCompleted {
		t.Fatalf("sale after a 300 refund: %s refunded %d", got.Status, got.RefundedAmountMinor)
	}

	// More than what is left.
	wsErr(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 701}, protocol.CodeRefundExceedsAmount, "amountMinor")
	wsErr(t, pos, "refund", map[string]any{"transactionId": s, "amount": "7.01"}, protocol.CodeRefundExceedsAmount, "amount")

	// A full refund of the rest (no amount); a pending refund counts.
	r2 := wsOK(t, pos, "refund", map[string]any{"transactionId": s})
	if r2.Transaction.AmountMinor != 700 {
		t.Fatalf("refund without an amount: %d, want the 700 left", r2.Transaction.AmountMinor)
	}
	startPayment(t, term, r2.Transaction.ID)
	wsErr(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 1}, protocol.CodeRefundExceedsAmount, "amountMinor")
	termSend(t, term, "commandReceived", r2.Transaction.ID, nil)
	approve(t, term, r2.Transaction.ID)
	posEvent(t, pos, protocol.ActionPaymentComplete, r2.Transaction.ID)
	if got := e.get(t, "pk1", s); got.RefundedAmountMinor != 1000 {
		t.Fatalf("sale after refunding everything: refunded %d", got.RefundedAmountMinor)
	}
	wsErr(t, pos, "refund", map[string]any{"transactionId": s}, protocol.CodeRefundExceedsAmount, "amountMinor")

	// A refund of a refund, and of sales that did not complete.
	wsErr(t, pos, "refund", map[string]any{"transactionId": rf.ID}, protocol.CodeInvalidState, "transactionId")
	dcl := dispatched(t, pos, term, "T1", 500, "rf-declined")
	termSend(t, term, "paymentResult", dcl, map[string]any{"outcome": "declined", "responseCode": "05"})
	command(t, term, protocol.ActionResultAck, dcl)
	posEvent(t, pos, protocol.ActionPaymentComplete, dcl)
	wsErr(t, pos, "refund", map[string]any{"transactionId": dcl}, protocol.CodeInvalidState, "transactionId")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+dcl+"/refund", map[string]any{"amountMinor": 1}, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")
	pend := sell(t, pos, "T1", 500, "rf-pending").Transaction.ID
	wsErr(t, pos, "refund", map[string]any{"transactionId": pend}, protocol.CodeInvalidState, "transactionId")
}

// A refund superseded by a newer refund never ran: its amount must be
// refundable again.
func TestSupersededRefundReleasesItsAmount(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	s := completedSale(t, pos, term, "T1", 1000, "rfs-sale")

	a := wsOK(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 600}).Transaction.ID
	startPayment(t, term, a)
	// Still PENDING: a new refund on the terminal supersedes it.
	b := wsOK(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 300}).Transaction.ID
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, a); ev.Transaction.Status != protocol.StatusSuperseded {
		t.Fatalf("first refund: %s, want SUPERSEDED", ev.Transaction.Status)
	}
	startPayment(t, term, b)
	termSend(t, term, "commandReceived", b, nil)
	approve(t, term, b)
	posEvent(t, pos, protocol.ActionPaymentComplete, b)
	if got := e.get(t, "pk1", s); got.RefundedAmountMinor != 300 {
		t.Fatalf("refunded %d, want 300", got.RefundedAmountMinor)
	}
	// 700 are left.
	r := wsOK(t, pos, "refund", map[string]any{"transactionId": s, "amountMinor": 700})
	if r.Transaction.AmountMinor != 700 {
		t.Fatalf("refund of the 700 left: %+v", r.Transaction)
	}
}

// ---- void ----

func TestVoid(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	s := completedSale(t, pos, term, "T1", 1000, "void-sale")

	r := wsOK(t, pos, "void", map[string]any{"transactionId": s, "reason": "wrong amount"})
	if r.Action != "voidResponse" || r.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("voidResponse: %s %s (the sale changes only when the terminal says ok)", r.Action, r.Transaction.Status)
	}
	vp := command(t, term, protocol.ActionVoidPayment, s)
	if vp.Reason != "wrong amount" {
		t.Fatalf("voidPayment: %+v", vp)
	}
	termSend(t, term, "voidResult", s, map[string]any{"ok": true})
	ev := posEvent(t, pos, protocol.ActionPaymentVoided, s)
	if ev.ReasonCode != protocol.VoidRequested || ev.Transaction.Status != protocol.StatusVoided || ev.Reason == "" ||
		ev.OriginalPaymentResponse == nil || ev.OriginalPaymentResponse.AuthCode == "" || ev.MessageID == "" {
		t.Fatalf("paymentVoided: %+v", ev)
	}
	if got := e.get(t, "pk1", s); got.Status != protocol.StatusVoided || got.Version != ev.Version {
		t.Fatalf("GET after void: %s v%d", got.Status, got.Version)
	}

	// A declined sale cannot be voided; neither can a PENDING one.
	d := dispatched(t, pos, term, "T1", 500, "void-declined")
	termSend(t, term, "paymentResult", d, map[string]any{"outcome": "declined"})
	command(t, term, protocol.ActionResultAck, d)
	posEvent(t, pos, protocol.ActionPaymentComplete, d)
	wsErr(t, pos, "void", map[string]any{"transactionId": d}, protocol.CodeInvalidState, "transactionId")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+d+"/void", map[string]any{"reason": "x"}, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")
	p := sell(t, pos, "T1", 500, "void-pending").Transaction.ID
	wsErr(t, pos, "void", map[string]any{"transactionId": p}, protocol.CodeInvalidState, "transactionId")
}

func TestVoidRefusedByTerminal(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	s := completedSale(t, pos, term, "T1", 1000, "void-no")

	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+s+"/void", map[string]any{"reason": "test"}, nil, http.StatusOK)
	command(t, term, protocol.ActionVoidPayment, s)
	before := e.get(t, "pk1", s)
	termSend(t, term, "voidResult", s, map[string]any{"ok": false, "errorMessage": "batch closed"})
	ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, s)
	for ev.Version <= before.Version {
		ev = posEvent(t, pos, protocol.ActionPaymentStatusUpdate, s) // DISPATCHED, from before
	}
	if ev.Transaction.Status != protocol.StatusCompleted || ev.Version != before.Version+1 {
		t.Fatalf("after a refused void: %s, want COMPLETED", ev.Transaction.Status)
	}
}

// ---- manual capture ----

func TestManualCapture(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	r := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 1250, "currency": "USD", "reference": "cap-1", "captureMode": "manual"})
	id := r.Transaction.ID
	if r.Transaction.CaptureMode != protocol.CaptureManual {
		t.Fatalf("captureMode %q", r.Transaction.CaptureMode)
	}
	if sp := startPayment(t, term, id); sp.CaptureMode != protocol.CaptureManual {
		t.Fatalf("startPayment captureMode %q", sp.CaptureMode)
	}
	termSend(t, term, "commandReceived", id, nil)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id); ev.Transaction.Status != protocol.StatusDispatched {
		t.Fatalf("after commandReceived: %s", ev.Transaction.Status)
	}
	approve(t, term, id)
	// AUTHORIZED is told as a status update, not as paymentComplete.
	m := next(t, pos)
	var ev protocol.POSEvent
	if m.Action != protocol.ActionPaymentStatusUpdate || m.Decode(&ev) != nil {
		t.Fatalf("after approval the POS got %s, want paymentStatusUpdate", m.Raw)
	}
	if ev.Transaction.Status != protocol.StatusAuthorized || ev.Transaction.AuthorizedAmountMinor != 1250 {
		t.Fatalf("after approval: %s authorized %d, want AUTHORIZED 1250", ev.Transaction.Status, ev.Transaction.AuthorizedAmountMinor)
	}

	c := wsOK(t, pos, "capture", map[string]any{"transactionId": id})
	if c.Action != "captureResponse" || c.Transaction.Status != protocol.StatusAuthorized {
		t.Fatalf("captureResponse: %s %s", c.Action, c.Transaction.Status)
	}
	if cp := command(t, term, protocol.ActionCapturePayment, id); cp.AmountMinor != 1250 {
		t.Fatalf("capturePayment: %+v", cp)
	}
	termSend(t, term, "captureResult", id, map[string]any{"ok": true, "amountMinor": 1250})
	done := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if done.Transaction.Status != protocol.StatusCompleted || done.Transaction.AmountMinor != 1250 {
		t.Fatalf("after capture: %+v", done.Transaction)
	}
	// A repeat answers again; a different amount is a conflict that says
	// what was captured.
	if again := wsOK(t, pos, "capture", map[string]any{"transactionId": id, "amountMinor": 1250}); again.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("repeated capture: %s", again.Transaction.Status)
	}
	if e := wsErr(t, pos, "capture", map[string]any{"transactionId": id, "amountMinor": 1000}, protocol.CodeInvalidState, "amountMinor"); !strings.Contains(e.Message, "1250") {
		t.Fatalf("conflicting capture: %q does not name the captured amount", e.Message)
	}
	// Capturing an auto-captured sale is refused.
	s := completedSale(t, pos, term, "T1", 100, "cap-auto")
	wsErr(t, pos, "capture", map[string]any{"transactionId": s}, protocol.CodeInvalidState, "transactionId")
}

// ---- signature ----

func TestSignature(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	// Answered by the POS.
	a := dispatched(t, pos, term, "T1", 100, "sig-a")
	termSend(t, term, "paymentProgress", a, map[string]any{"stage": "card_presented"})
	termSend(t, term, "signatureRequired", a, nil)
	ev := posEvent(t, pos, protocol.ActionSignatureRequired, a)
	if ev.Transaction.Status != protocol.StatusAwaitingSignature || ev.MessageID == "" {
		t.Fatalf("signatureRequired to the POS: %+v", ev)
	}
	r := wsOK(t, pos, "signatureVerification", map[string]any{"transactionId": a, "accepted": true})
	if r.Action != "signatureVerificationResponse" {
		t.Fatalf("reply %s", r.Action)
	}
	if sv := command(t, term, protocol.ActionSignatureVerified, a); sv.Accepted == nil || !*sv.Accepted {
		t.Fatalf("signatureVerified: %+v, want accepted:true", sv)
	}
	approve(t, term, a)
	posEvent(t, pos, protocol.ActionPaymentComplete, a)

	// Not answered: declined after 60 s, never silently accepted.
	b := dispatched(t, pos, term, "T1", 200, "sig-b")
	termSend(t, term, "signatureRequired", b, nil)
	posEvent(t, pos, protocol.ActionSignatureRequired, b)
	e.advance(t, 59*time.Second, pos, term)
	if got := e.get(t, "pk1", b); got.Status != protocol.StatusAwaitingSignature {
		t.Fatalf("59 s after the prompt: %s", got.Status)
	}
	e.advance(t, time.Second, pos, term)
	if sv := command(t, term, protocol.ActionSignatureVerified, b); sv.Accepted == nil || *sv.Accepted {
		t.Fatalf("signatureVerified after the timeout: %+v, want accepted:false", sv)
	}
	if got := e.get(t, "pk1", b); got.Status == protocol.StatusAwaitingSignature || got.Status.Final() {
		t.Fatalf("after the signature timeout: %s", got.Status)
	}
	// A late answer from the POS is refused.
	wsErr(t, pos, "signatureVerification", map[string]any{"transactionId": b, "accepted": true}, protocol.CodeInvalidState, "transactionId")

	// The terminal declines as it would for a refusal; the transaction says
	// the prompt went unanswered, so the POS can tell the two apart.
	termSend(t, term, "paymentResult", b, map[string]any{"outcome": "declined", "errorCode": protocol.TxnErrSignatureDeclined})
	command(t, term, protocol.ActionResultAck, b)
	if got := posEvent(t, pos, protocol.ActionPaymentComplete, b).Transaction; got.Status != protocol.StatusDeclined || got.ErrorCode != protocol.TxnErrSignatureTimeout {
		t.Fatalf("unanswered prompt: %s errorCode %q, want DECLINED signature_timeout", got.Status, got.ErrorCode)
	}
	if got := e.get(t, "pk1", b); got.ErrorCode != protocol.TxnErrSignatureTimeout {
		t.Fatalf("GET after the unanswered prompt: errorCode %q, want signature_timeout", got.ErrorCode)
	}

	// Declined over REST: the refusal keeps signature_declined.
	c := dispatched(t, pos, term, "T1", 300, "sig-c")
	termSend(t, term, "signatureRequired", c, nil)
	posEvent(t, pos, protocol.ActionSignatureRequired, c)
	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+c+"/signature", map[string]any{"accepted": false}, nil, http.StatusOK)
	if sv := command(t, term, protocol.ActionSignatureVerified, c); sv.Accepted == nil || *sv.Accepted {
		t.Fatalf("signatureVerified: %+v, want accepted:false", sv)
	}
	termSend(t, term, "paymentResult", c, map[string]any{"outcome": "declined", "errorCode": protocol.TxnErrSignatureDeclined})
	command(t, term, protocol.ActionResultAck, c)
	if got := e.get(t, "pk1", c); got.Status != protocol.StatusDeclined || got.ErrorCode != protocol.TxnErrSignatureDeclined {
		t.Fatalf("refused signature: %s errorCode %q, want DECLINED signature_declined", got.Status, got.ErrorCode)
	}
}

// ---- payment timeout ----

func TestPaymentTimeoutUnreachable(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	id := sell(t, pos, "T1", 100, "to-1").Transaction.ID
	startPayment(t, term, id) // never acknowledged
	e.advance(t, 179*time.Second, pos, term)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusPending {
		t.Fatalf("at 179 s: %s", got.Status)
	}
	e.advance(t, time.Second, pos, term)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusTimedOut || ev.Transaction.ErrorCode != protocol.TxnErrTerminalUnreachable {
		t.Fatalf("at 180 s: %s %q, want TIMED_OUT terminal_unreachable", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	command(t, term, protocol.ActionCancelPayment, id)
}

func TestPaymentTimeoutTerminal(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	id := dispatched(t, pos, term, "T1", 100, "to-2")
	e.advance(t, 180*time.Second, pos, term)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusTimedOut || ev.Transaction.ErrorCode != protocol.TxnErrTerminalTimeout {
		t.Fatalf("at 180 s: %s %q, want TIMED_OUT terminal_timeout", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	command(t, term, protocol.ActionCancelPayment, id)
}

func TestPaymentTimeoutSecondsAndLateApproval(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	r := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 100, "currency": "USD", "reference": "to-3", "timeoutSeconds": 30})
	id := r.Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id)
	e.advance(t, 29*time.Second, pos, term)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusDispatched {
		t.Fatalf("at 29 s: %s", got.Status)
	}
	e.advance(t, time.Second, pos, term)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusTimedOut || ev.Transaction.ErrorCode != protocol.TxnErrTerminalTimeout {
		t.Fatalf("at 30 s: %s %q, want TIMED_OUT terminal_timeout", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	command(t, term, protocol.ActionCancelPayment, id)

	// The approval arrives anyway: voided.
	approve(t, term, id)
	v := posEvent(t, pos, protocol.ActionPaymentVoided, id)
	if v.ReasonCode != protocol.VoidLateAfterTimeout || v.Transaction.Status != protocol.StatusVoided || v.OriginalPaymentResponse == nil {
		t.Fatalf("paymentVoided: %+v", v)
	}
	command(t, term, protocol.ActionVoidPayment, id)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusVoided {
		t.Fatalf("GET: %s", got.Status)
	}
}

// ---- terminal-reported failures ----

func TestTerminalReportedErrorCodes(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	for i, c := range []struct {
		fields     map[string]any
		status     protocol.Status
		errorCode  string
		errMessage string
	}{
		{map[string]any{"outcome": "error", "errorCode": "card_error", "errorMessage": "chip unreadable"}, protocol.StatusFailed, protocol.TxnErrCardError, "chip unreadable"},
		{map[string]any{"outcome": "error", "errorCode": "customer_timeout", "errorMessage": "no card"}, protocol.StatusFailed, protocol.TxnErrCustomerTimeout, "no card"},
		{map[string]any{"outcome": "error", "errorMessage": "printer jam"}, protocol.StatusFailed, protocol.TxnErrTerminalError, "printer jam"},
		{map[string]any{"outcome": "cancelled", "errorMessage": "customer pressed cancel"}, protocol.StatusCancelled, "", "customer pressed cancel"},
	} {
		id := dispatched(t, pos, term, "T1", int64(100+i), "err-"+string(rune('a'+i)))
		termSend(t, term, "paymentResult", id, c.fields)
		command(t, term, protocol.ActionResultAck, id)
		ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
		if ev.Transaction.Status != c.status || ev.Transaction.ErrorCode != c.errorCode || ev.Transaction.ErrorMessage != c.errMessage {
			t.Errorf("%v: %s %q %q, want %s %q %q", c.fields, ev.Transaction.Status, ev.Transaction.ErrorCode, ev.Transaction.ErrorMessage, c.status, c.errorCode, c.errMessage)
		}
	}
}

// ---- masked PAN ----

func TestFullPANRefused(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	id := dispatched(t, pos, term, "T1", 100, "pan-1")
	termSend(t, term, "paymentProgress", id, map[string]any{"stage": "processing"})
	posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id)
	before := e.get(t, "pk1", id)

	for i, pan := range []string{"4111111111111111", "4111 1111 1111 1111", "4111111******1111", "411111******11111", "４１１１１１１１１１１１１１１１"} {
		send(t, term, "paymentResult", map[string]any{"requestId": i, "transactionId": id, "outcome": "approved", "authCode": "A1", "maskedPan": pan})
		m := next(t, term)
		if e := m.Err(); e == nil || e.Code != protocol.CodeInvalidRequest || e.Field != "maskedPan" {
			t.Fatalf("maskedPan %q: terminal got %s, want error invalid_request field maskedPan", pan, m.Raw)
		}
		if strings.Contains(string(m.Raw), strings.ReplaceAll(pan, " ", "")) || strings.Contains(string(m.Raw), pan) {
			t.Fatalf("the error echoes the card number: %s", m.Raw)
		}
		// No resultAck follows: the next thing the terminal hears is the
		// answer to its next message.
		send(t, term, "probe", map[string]any{"requestId": "probe"})
		if m := next(t, term); m.Err() == nil || m.Err().Code != protocol.CodeUnknownAction {
			t.Fatalf("after a refused result: %s, want only the probe's error (no resultAck)", m.Raw)
		}
	}
	got := e.get(t, "pk1", id)
	if got.Status != protocol.StatusInProgress || got.MaskedPAN != "" || got.AuthCode != "" || got.Version != before.Version {
		t.Fatalf("after refused results: %s maskedPan %q authCode %q v%d, want it unchanged (v%d)", got.Status, got.MaskedPAN, got.AuthCode, got.Version, before.Version)
	}

	// Sent again correctly, it is taken.
	termSend(t, term, "paymentResult", id, map[string]any{"outcome": "approved", "authCode": "A1", "maskedPan": "411111******1111"})
	if m := next(t, term); m.Action != protocol.ActionResultAck {
		t.Fatalf("corrected result: %s, want resultAck", m.Raw)
	}
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusCompleted || ev.Transaction.MaskedPAN != "411111******1111" {
		t.Fatalf("paymentComplete: %s %q", ev.Transaction.Status, ev.Transaction.MaskedPAN)
	}
}

// ---- merchant isolation ----

func TestMerchantIsolation(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := completedSale(t, pos, term, "T1", 1000, "iso-1")
	pend := sell(t, pos, "T1", 10, "iso-2").Transaction.ID

	// Same merchant, other key: visible.
	if got := e.get(t, "pk1b", id); got.ID != id {
		t.Fatalf("pk1b GET: %+v", got)
	}

	// Another merchant: exactly like an id that does not exist.
	foreign := e.do(t, "pk2", "GET", "/v1/transactions/"+id, nil, nil)
	missing := e.do(t, "pk2", "GET", "/v1/transactions/txn_000000000000000000000000", nil, nil)
	checkErr(t, "GET foreign", foreign, http.StatusNotFound, protocol.CodeTransactionNotFound, "transactionId")
	if foreign.Status != missing.Status || string(foreign.Body) != string(missing.Body) {
		t.Errorf("foreign id answered %d %s, unknown id %d %s: they must be the same", foreign.Status, foreign.Body, missing.Status, missing.Body)
	}
	for _, c := range []struct {
		action string
		body   any
		txn    string
	}{
		{"cancel", nil, pend},
		{"refund", map[string]any{"amountMinor": 1}, id},
		{"void", nil, id},
		{"capture", nil, id},
		{"signature", map[string]any{"accepted": true}, pend},
	} {
		e.doErr(t, "pk2", "POST", "/v1/transactions/"+c.txn+"/"+c.action, c.body, nil, http.StatusNotFound, protocol.CodeTransactionNotFound, "transactionId")
	}

	other := e.pos("pk2")
	wsErr(t, other, "getTransactionStatus", map[string]any{"transactionId": id}, protocol.CodeTransactionNotFound, "transactionId")
	wsErr(t, other, "cancel", map[string]any{"transactionId": pend}, protocol.CodeTransactionNotFound, "transactionId")
	wsErr(t, other, "refund", map[string]any{"transactionId": id}, protocol.CodeTransactionNotFound, "transactionId")
	wsErr(t, other, "void", map[string]any{"transactionId": id}, protocol.CodeTransactionNotFound, "transactionId")
	wsErr(t, other, "payment", map[string]any{"terminalId": "T1", "amountMinor": 1, "currency": "USD", "reference": "iso-x"}, protocol.CodeTerminalNotFound, "terminalId")
	if p, _ := e.list(t, "pk2", ""); len(p.Data) != 0 {
		t.Fatalf("m2 lists m1's transactions: %v", ids(p.Data))
	}
	if p, _ := e.list(t, "pk2", "?reference=iso-1"); len(p.Data) != 0 {
		t.Fatalf("m2 finds m1's reference: %v", ids(p.Data))
	}

	// Nothing changed on m1's side.
	if got := e.get(t, "pk1", pend); got.Status != protocol.StatusPending {
		t.Fatalf("m1's pending sale after m2's cancel: %s", got.Status)
	}
	st := wsOK(t, pos, "getTransactionStatus", map[string]any{"transactionId": id})
	if st.Action != protocol.ActionTransactionStatus || st.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("getTransactionStatus: %s %+v", st.Action, st.Transaction)
	}
}

// docs/protocol.md#pos-protocol: "A reply only says the request was accepted ... the outcome
// always comes later as paymentComplete or paymentVoided." A cancel decides
// at once, and its cancelResponse must still come before the
// paymentComplete it causes: a POS that waits for the reply first (as the
// harness's reply helper does) must not lose the outcome.
func TestReplyPrecedesOutcome(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	id := sell(t, pos, "T1", 100, "order-cancel").Transaction.ID
	startPayment(t, term, id)
	send(t, pos, "cancel", map[string]any{"requestId": "c1", "transactionId": id})
	first, second := next(t, pos), next(t, pos)
	if first.Action != "cancelResponse" || second.Action != protocol.ActionPaymentComplete {
		t.Fatalf("after cancel the POS got %s then %s, want cancelResponse then paymentComplete", first.Action, second.Action)
	}
}

// The timeout runs from when startPayment was first sent, not from when the
// sale was created for a terminal that was reconnecting.
func TestTimeoutRunsFromFirstSend(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	dropT1(t, e, term)

	id := sell(t, pos, "T1", 100, "tf-1").Transaction.ID
	e.advance(t, 50*time.Second, pos)
	back := e.terminal("T1")
	startPayment(t, back, id)
	termSend(t, back, "commandReceived", id, nil)
	e.advance(t, 179*time.Second, pos, back)
	if got := e.get(t, "pk1", id); got.Status != protocol.StatusDispatched {
		t.Fatalf("179 s after startPayment (229 s after creation): %s %q, want DISPATCHED", got.Status, got.ErrorCode)
	}
	e.advance(t, time.Second, pos, back)
	ev := posEvent(t, pos, protocol.ActionPaymentComplete, id)
	if ev.Transaction.Status != protocol.StatusTimedOut || ev.Transaction.ErrorCode != protocol.TxnErrTerminalTimeout {
		t.Fatalf("180 s after startPayment: %s %q, want TIMED_OUT terminal_timeout", ev.Transaction.Status, ev.Transaction.ErrorCode)
	}
	command(t, back, protocol.ActionCancelPayment, id)
}
