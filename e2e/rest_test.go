package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// The payment rules over signed HTTP (docs/protocol.md#endpoints, docs/protocol.md#transactions): statuses, the
// Idempotency-Key header and the transaction list.

func TestRESTReferenceIdempotency(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	e.terminal("T2")

	first := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 1250, "r-1"), nil, http.StatusCreated)
	if first.Created == nil || !*first.Created || first.Transaction.Status != protocol.StatusPending || first.Transaction.Reference != "r-1" {
		t.Fatalf("first POST: %+v created=%v", first.Transaction, first.Created)
	}
	id := first.Transaction.ID
	startPayment(t, term, id)

	again := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 1250, "r-1"), nil, http.StatusOK)
	if again.Created == nil || *again.Created || again.Transaction.ID != id {
		t.Fatalf("same reference: %+v created=%v, want %s created:false", again.Transaction, again.Created, id)
	}
	// The same amount as a decimal string, from another key of the merchant.
	dec := e.doTxn(t, "pk1b", "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amount": "12.50", "currency": "USD", "reference": "r-1"}, nil, http.StatusOK)
	if *dec.Created || dec.Transaction.ID != id {
		t.Fatalf("same reference as amount \"12.50\": %+v", dec.Transaction)
	}
	for _, b := range []map[string]any{sale("T1", 1251, "r-1"), sale("T2", 1250, "r-1"),
		{"terminalId": "T1", "amountMinor": 1250, "currency": "CAD", "reference": "r-1"}} {
		e.doErr(t, "pk1", "POST", "/v1/payments", b, nil, http.StatusConflict, protocol.CodeReferenceConflict, "reference")
	}
	// Whatever the state: after the sale is cancelled, the reference still
	// answers it, and does not start a new sale.
	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+id+"/cancel", nil, nil, http.StatusOK)
	if r := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 1250, "r-1"), nil, http.StatusOK); *r.Created || r.Transaction.Status != protocol.StatusCancelled {
		t.Fatalf("same reference after cancel: %+v", r.Transaction)
	}
}

func TestRESTIdempotencyKeyPayments(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")

	first := e.do(t, "pk1", "POST", "/v1/payments", sale("T1", 990, "ik-1"), idem("key-1"))
	if first.Status != http.StatusCreated {
		t.Fatalf("first: HTTP %d %s", first.Status, first.Body)
	}
	var fb txnBody
	_ = first.Decode(&fb)
	id := fb.Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	kit.Eventually(t, "dispatched", func() bool { return e.get(t, "pk1", id).Status == protocol.StatusDispatched })

	// A replay answers the first response: same status, same body.
	replay := e.do(t, "pk1", "POST", "/v1/payments", sale("T1", 990, "ik-1"), idem("key-1"))
	if replay.Status != http.StatusCreated || !bytes.Equal(replay.Body, first.Body) {
		t.Fatalf("replay: HTTP %d %s\nwant HTTP 201 %s", replay.Status, replay.Body, first.Body)
	}
	// The same key with another body.
	for _, b := range []any{sale("T1", 991, "ik-1"), sale("T1", 990, "ik-2"),
		map[string]any{"terminalId": "T1", "amountMinor": 990, "currency": "USD", "reference": "ik-1", "description": "x"}} {
		e.doErr(t, "pk1", "POST", "/v1/payments", b, idem("key-1"), http.StatusUnprocessableEntity, protocol.CodeIdempotencyKeyReused, "Idempotency-Key")
	}
	// Keys are the merchant's: pk1b's request with pk1's key is a replay.
	if r := e.do(t, "pk1b", "POST", "/v1/payments", sale("T1", 990, "ik-1"), idem("key-1")); r.Status != http.StatusCreated || !bytes.Equal(r.Body, first.Body) {
		t.Fatalf("replay from pk1b: HTTP %d %s", r.Status, r.Body)
	}
	// Another merchant's key space is its own.
	e.terminal("U1")
	if r := e.doTxn(t, "pk2", "POST", "/v1/payments", sale("U1", 990, "ik-1"), idem("key-1"), http.StatusCreated); r.Transaction.ID == id || !*r.Created {
		t.Fatalf("m2 with m1's key: %+v, want a new m2 sale", r.Transaction)
	}

	// A fresh key for the same reference follows the reference rule. (A
	// second on: the client signs at most three identical requests a
	// second, and the Idempotency-Key header is not signed.)
	e.Clock.Advance(time.Second)
	r := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 990, "ik-1"), idem("key-2"), http.StatusOK)
	if *r.Created || r.Transaction.ID != id || r.Transaction.Status != protocol.StatusDispatched {
		t.Fatalf("new key, same reference: %+v created=%v", r.Transaction, *r.Created)
	}
	// ...and replays that (second) response.
	if r2 := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 990, "ik-1"), idem("key-2"), http.StatusOK); *r2.Created || r2.Transaction.ID != id {
		t.Fatalf("replay of key-2: %+v", r2.Transaction)
	}

	// A refused request is not recorded: the key may be used again once
	// the cause is gone (here: the terminal is busy, then free).
	e.doErr(t, "pk1", "POST", "/v1/payments", sale("T1", 5, "ik-3"), idem("key-3"), http.StatusConflict, protocol.CodeDeviceBusy, "terminalId")
	approve(t, term, id)
	kit.Eventually(t, "completed", func() bool { return e.get(t, "pk1", id).Status == protocol.StatusCompleted })
	e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 5, "ik-3"), idem("key-3"), http.StatusCreated)

	// An over-long key.
	e.doErr(t, "pk1", "POST", "/v1/payments", sale("T1", 5, "ik-4"), idem(strings.Repeat("k", 129)), http.StatusBadRequest, protocol.CodeInvalidRequest, "Idempotency-Key")
}

func TestRESTIdempotencyKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	// cancel
	a := sell(t, pos, "T1", 100, "ikl-a").Transaction.ID
	startPayment(t, term, a)
	c1 := e.do(t, "pk1", "POST", "/v1/transactions/"+a+"/cancel", nil, idem("c-1"))
	if c1.Status != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", c1.Status, c1.Body)
	}
	command(t, term, protocol.ActionCancelPayment, a)
	approve(t, term, a) // late approval: VOIDED
	posEvent(t, pos, protocol.ActionPaymentVoided, a)
	// Executed again, cancel would now be invalid_state; replayed, it is the
	// first answer.
	c2 := e.do(t, "pk1", "POST", "/v1/transactions/"+a+"/cancel", nil, idem("c-1"))
	if c2.Status != http.StatusOK || !bytes.Equal(c2.Body, c1.Body) {
		t.Fatalf("replayed cancel: HTTP %d %s\nwant %s", c2.Status, c2.Body, c1.Body)
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+a+"/cancel", nil, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+a+"/void", nil, idem("c-1"), http.StatusUnprocessableEntity, protocol.CodeIdempotencyKeyReused, "Idempotency-Key")

	// refund: a replay creates nothing new.
	s := completedSale(t, pos, term, "T1", 1000, "ikl-s")
	r1 := e.do(t, "pk1", "POST", "/v1/transactions/"+s+"/refund", map[string]any{"amountMinor": 100}, idem("r-1"))
	if r1.Status != http.StatusCreated {
		t.Fatalf("refund: HTTP %d %s", r1.Status, r1.Body)
	}
	r2 := e.do(t, "pk1", "POST", "/v1/transactions/"+s+"/refund", map[string]any{"amountMinor": 100}, idem("r-1"))
	if r2.Status != r1.Status || !bytes.Equal(r2.Body, r1.Body) {
		t.Fatalf("replayed refund: HTTP %d %s\nwant %s", r2.Status, r2.Body, r1.Body)
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+s+"/refund", map[string]any{"amountMinor": 200}, idem("r-1"), http.StatusUnprocessableEntity, protocol.CodeIdempotencyKeyReused, "Idempotency-Key")
	if p, _ := e.list(t, "pk1", "?type=refund"); len(p.Data) != 1 {
		t.Fatalf("refunds after a replay: %d, want 1", len(p.Data))
	}
	var rb txnBody
	_ = r1.Decode(&rb)
	startPayment(t, term, rb.Transaction.ID)
	termSend(t, term, "commandReceived", rb.Transaction.ID, nil)
	approve(t, term, rb.Transaction.ID)
	posEvent(t, pos, protocol.ActionPaymentComplete, rb.Transaction.ID)

	// capture and signature with keys.
	m := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 500, "currency": "USD", "reference": "ikl-m", "captureMode": "manual"}).Transaction.ID
	startPayment(t, term, m)
	termSend(t, term, "commandReceived", m, nil)
	termSend(t, term, "signatureRequired", m, nil)
	posEvent(t, pos, protocol.ActionSignatureRequired, m)
	s1 := e.do(t, "pk1", "POST", "/v1/transactions/"+m+"/signature", map[string]any{"accepted": true}, idem("s-1"))
	s2 := e.do(t, "pk1", "POST", "/v1/transactions/"+m+"/signature", map[string]any{"accepted": true}, idem("s-1"))
	if s1.Status != http.StatusOK || s2.Status != http.StatusOK || !bytes.Equal(s1.Body, s2.Body) {
		t.Fatalf("signature and its replay: %d %s / %d %s", s1.Status, s1.Body, s2.Status, s2.Body)
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+m+"/signature", map[string]any{"accepted": false}, idem("s-1"), http.StatusUnprocessableEntity, protocol.CodeIdempotencyKeyReused, "Idempotency-Key")
	command(t, term, protocol.ActionSignatureVerified, m)
	approve(t, term, m)
	kit.Eventually(t, "authorized", func() bool { return e.get(t, "pk1", m).Status == protocol.StatusAuthorized })
	k1 := e.do(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 400}, idem("k-1"))
	k2 := e.do(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 400}, idem("k-1"))
	if k1.Status != http.StatusOK || !bytes.Equal(k1.Body, k2.Body) {
		t.Fatalf("capture and its replay: %d %s / %d %s", k1.Status, k1.Body, k2.Status, k2.Body)
	}
	if cp := command(t, term, protocol.ActionCapturePayment, m); cp.AmountMinor != 400 {
		t.Fatalf("capturePayment: %+v", cp)
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 300}, idem("k-1"), http.StatusUnprocessableEntity, protocol.CodeIdempotencyKeyReused, "Idempotency-Key")
}

func TestRESTLifecycle(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	// refund over REST: 201 with the new refund transaction.
	s := completedSale(t, pos, term, "T1", 1000, "rl-s")
	rf := e.doTxn(t, "pk1", "POST", "/v1/transactions/"+s+"/refund", map[string]any{"amount": "2.50", "reason": "r"}, nil, http.StatusCreated).Transaction
	if rf.Type != protocol.TypeRefund || rf.ParentID != s || rf.AmountMinor != 250 || rf.Status != protocol.StatusPending {
		t.Fatalf("refund: %+v", rf)
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+s+"/refund", map[string]any{"amountMinor": 751}, nil, http.StatusUnprocessableEntity, protocol.CodeRefundExceedsAmount, "amountMinor")
	startPayment(t, term, rf.ID)
	termSend(t, term, "commandReceived", rf.ID, nil)
	approve(t, term, rf.ID)
	posEvent(t, pos, protocol.ActionPaymentComplete, rf.ID)
	if got := e.get(t, "pk1", s); got.RefundedAmountMinor != 250 {
		t.Fatalf("refunded %d", got.RefundedAmountMinor)
	}
	// A sale with refunds is not voided (refund it instead).
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+s+"/void", nil, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")

	// void over REST.
	v := completedSale(t, pos, term, "T1", 700, "rl-v")
	if r := e.doTxn(t, "pk1", "POST", "/v1/transactions/"+v+"/void", map[string]any{"reason": "dup"}, nil, http.StatusOK); r.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("void: %s", r.Transaction.Status)
	}
	command(t, term, protocol.ActionVoidPayment, v)
	termSend(t, term, "voidResult", v, map[string]any{"ok": true})
	if ev := posEvent(t, pos, protocol.ActionPaymentVoided, v); ev.ReasonCode != protocol.VoidRequested {
		t.Fatalf("paymentVoided: %+v", ev)
	}
	// A VOIDED sale cannot be refunded.
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+v+"/refund", nil, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")

	// capture over REST, and its limits.
	m := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 2000, "currency": "USD", "reference": "rl-m", "captureMode": "manual"}).Transaction.ID
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", nil, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")
	startPayment(t, term, m)
	termSend(t, term, "commandReceived", m, nil)
	approve(t, term, m)
	kit.Eventually(t, "authorized", func() bool { return e.get(t, "pk1", m).Status == protocol.StatusAuthorized })
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 2001}, nil, http.StatusBadRequest, protocol.CodeInvalidRequest, "amountMinor")
	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 1500}, nil, http.StatusOK)
	if cp := command(t, term, protocol.ActionCapturePayment, m); cp.AmountMinor != 1500 {
		t.Fatalf("capturePayment: %+v", cp)
	}
	termSend(t, term, "captureResult", m, map[string]any{"ok": true, "amountMinor": 1500})
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, m); ev.Transaction.Status != protocol.StatusCompleted || ev.Transaction.AmountMinor != 1500 {
		t.Fatalf("after capture: %s %d", ev.Transaction.Status, ev.Transaction.AmountMinor)
	}
	// A repeated capture is answered again (no amount, or the captured one);
	// another amount is a conflict. No second capturePayment is sent: the
	// terminal's next command is the next payment's startPayment (below).
	for _, body := range []any{nil, map[string]any{"amountMinor": 1500}} {
		if got := e.doTxn(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", body, nil, http.StatusOK).Transaction; got.Status != protocol.StatusCompleted || got.AmountMinor != 1500 {
			t.Fatalf("repeated capture %v: %s %d", body, got.Status, got.AmountMinor)
		}
	}
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+m+"/capture", map[string]any{"amountMinor": 1600}, nil, http.StatusConflict, protocol.CodeInvalidState, "amountMinor")
	if got := e.get(t, "pk1", m); got.Status != protocol.StatusCompleted || got.AmountMinor != 1500 {
		t.Fatalf("after the refused capture: %s %d", got.Status, got.AmountMinor)
	}

	// void of an AUTHORIZED sale.
	a := wsOK(t, pos, "payment", map[string]any{"terminalId": "T1", "amountMinor": 300, "currency": "USD", "reference": "rl-a", "captureMode": "manual"}).Transaction.ID
	startPayment(t, term, a)
	termSend(t, term, "commandReceived", a, nil)
	approve(t, term, a)
	kit.Eventually(t, "authorized", func() bool { return e.get(t, "pk1", a).Status == protocol.StatusAuthorized })
	e.doTxn(t, "pk1", "POST", "/v1/transactions/"+a+"/void", nil, nil, http.StatusOK)
	command(t, term, protocol.ActionVoidPayment, a)
	termSend(t, term, "voidResult", a, map[string]any{"ok": true})
	if ev := posEvent(t, pos, protocol.ActionPaymentVoided, a); ev.Transaction.Status != protocol.StatusVoided || ev.ReasonCode != protocol.VoidRequested {
		t.Fatalf("void of AUTHORIZED: %+v", ev)
	}

	// signature over REST outside AWAITING_SIGNATURE.
	e.doErr(t, "pk1", "POST", "/v1/transactions/"+s+"/signature", map[string]any{"accepted": true}, nil, http.StatusConflict, protocol.CodeInvalidState, "transactionId")

	// Unknown ids.
	for _, action := range []string{"cancel", "void", "capture", "refund"} {
		e.doErr(t, "pk1", "POST", "/v1/transactions/txn_nope/"+action, nil, nil, http.StatusNotFound, protocol.CodeTransactionNotFound, "transactionId")
	}
	e.doErr(t, "pk1", "GET", "/v1/transactions/txn_nope", nil, nil, http.StatusNotFound, protocol.CodeTransactionNotFound, "transactionId")
}

func TestRESTListTransactions(t *testing.T) {
	e := newEnv(t)
	t1 := e.terminal("T1")
	t2 := e.terminal("T2")
	pos := e.pos("pk1")
	tick := func() { e.advance(t, time.Second, pos, t1, t2) }

	// Five transactions, one second apart, newest last:
	// A sale T1 COMPLETED, B sale T2 DECLINED, R refund T1 COMPLETED,
	// C sale T1 SUPERSEDED, D sale T1 PENDING.
	a := completedSale(t, pos, t1, "T1", 1000, "L-a")
	tick()
	b := dispatched(t, pos, t2, "T2", 200, "L-b")
	termSend(t, t2, "paymentResult", b, map[string]any{"outcome": "declined"})
	posEvent(t, pos, protocol.ActionPaymentComplete, b)
	tick()
	r := wsOK(t, pos, "refund", map[string]any{"transactionId": a, "amountMinor": 100, "reference": "L-r"}).Transaction.ID
	startPayment(t, t1, r)
	termSend(t, t1, "commandReceived", r, nil)
	approve(t, t1, r)
	posEvent(t, pos, protocol.ActionPaymentComplete, r)
	tick()
	c := sell(t, pos, "T1", 300, "L-c").Transaction.ID
	tick()
	d := sell(t, pos, "T1", 400, "L-d").Transaction.ID
	posEvent(t, pos, protocol.ActionPaymentComplete, c)

	type want struct {
		ids     []string
		hasMore bool
		next    string
	}
	for _, c := range []struct {
		query string
		want  want
	}{
		{"", want{ids: []string{d, c, r, b, a}}},
		{"?limit=100", want{ids: []string{d, c, r, b, a}}},
		{"?terminalId=T2", want{ids: []string{b}}},
		{"?terminalId=T1", want{ids: []string{d, c, r, a}}},
		{"?terminalId=" + url.QueryEscape(t2.ConnectionID()), want{ids: []string{b}}},
		{"?terminalId=U1", want{ids: []string{}}},
		{"?status=COMPLETED", want{ids: []string{r, a}}},
		{"?status=SUPERSEDED", want{ids: []string{c}}},
		{"?status=PENDING", want{ids: []string{d}}},
		{"?status=VOIDED", want{ids: []string{}}},
		{"?reference=L-b", want{ids: []string{b}}},
		{"?reference=L-r", want{ids: []string{r}}},
		{"?reference=nope", want{ids: []string{}}},
		{"?type=refund", want{ids: []string{r}}},
		{"?type=sale", want{ids: []string{d, c, b, a}}},
		{"?terminalId=T1&type=sale&status=COMPLETED", want{ids: []string{a}}},
		{"?reference=L-b&terminalId=T1", want{ids: []string{}}},
		// Pages.
		{"?limit=2", want{[]string{d, c}, true, c}},
		{"?limit=2&after=" + c, want{[]string{r, b}, true, b}},
		{"?limit=2&after=" + b, want{ids: []string{a}}},
		{"?limit=1&after=" + b, want{ids: []string{a}}},
		{"?limit=4", want{[]string{d, c, r, b}, true, b}},
		{"?after=" + a, want{ids: []string{}}},
		{"?type=sale&limit=2", want{[]string{d, c}, true, c}},
		{"?type=sale&limit=2&after=" + c, want{ids: []string{b, a}}},
		{"?terminalId=T1&limit=3", want{[]string{d, c, r}, true, r}},
		{"?terminalId=T1&limit=3&after=" + r, want{ids: []string{a}}},
	} {
		p, raw := e.list(t, "pk1", c.query)
		got := ids(p.Data)
		if !reflect.DeepEqual(got, c.want.ids) || p.HasMore != c.want.hasMore {
			t.Errorf("GET /v1/transactions%s: %v hasMore=%v, want %v hasMore=%v", c.query, got, p.HasMore, c.want.ids, c.want.hasMore)
			continue
		}
		switch {
		case c.want.next == "" && !bytes.Contains(raw, []byte(`"nextCursor":null`)):
			t.Errorf("GET /v1/transactions%s: body %s, want \"nextCursor\":null on the last page", c.query, raw)
		case c.want.next != "" && (p.NextCursor == nil || *p.NextCursor != c.want.next):
			t.Errorf("GET /v1/transactions%s: nextCursor %v, want %s", c.query, p.NextCursor, c.want.next)
		}
		if !bytes.Contains(raw, []byte(`"data":[`)) {
			t.Errorf("GET /v1/transactions%s: data is not an array: %s", c.query, raw)
		}
	}
	// Walking the pages with nextCursor visits everything once.
	var all []string
	cursor := ""
	for page := 0; page < 10; page++ {
		q := "?limit=2"
		if cursor != "" {
			q += "&after=" + cursor
		}
		p, _ := e.list(t, "pk1", q)
		all = append(all, ids(p.Data)...)
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	if !reflect.DeepEqual(all, []string{d, c, r, b, a}) {
		t.Errorf("walking pages: %v", all)
	}

	// Bad filters.
	for _, c := range []struct{ query, field string }{
		{"?limit=101", "limit"},
		{"?limit=0", "limit"},
		{"?limit=-1", "limit"},
		{"?limit=ten", "limit"},
		{"?limit=2.5", "limit"},
		{"?status=DONE", "status"},
		{"?status=completed", "status"},
		{"?type=payment", "type"},
		{"?after=txn_unknown", "after"},
	} {
		e.doErr(t, "pk1", "GET", "/v1/transactions"+c.query, nil, nil, http.StatusBadRequest, protocol.CodeInvalidRequest, c.field)
	}
}
