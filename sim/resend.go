package sim

import (
	"container/list"
	"context"
	"time"

	"github.com/termhub/termhub/protocol"
)

// resendAfter is how long a terminal waits before sending again a message
// the hub answered with unavailable: the hub may not have recorded it, and
// its store is stalled or restarting, so an immediate repeat would most
// likely be refused too (docs/protocol.md#terminal-protocol).
const resendAfter = time.Second

// keepSent bounds how many sent messages a Terminal remembers for re-sending.
// The hub answers a message within moments, so only the newest ones can
// still be answered unavailable.
const keepSent = 256

// resendable are the terminal → hub messages sent again when the hub answers
// them unavailable.
var resendable = map[string]bool{
	protocol.ActionCommandReceived:   true,
	protocol.ActionPaymentProgress:   true,
	protocol.ActionSignatureRequired: true,
	protocol.ActionPaymentResult:     true,
	protocol.ActionVoidResult:        true,
	protocol.ActionCaptureResult:     true,
}

// flowActions are the messages of a card flow. Once the payment's result is
// acknowledged the hub has moved past them, so they are no longer kept for
// re-sending.
var flowActions = []string{protocol.ActionCommandReceived, protocol.ActionPaymentProgress, protocol.ActionSignatureRequired}

// requestID is the requestId of the message action about txnID: the hub
// names it in an error reply, which tells the terminal what was refused.
func requestID(action, txnID string) string { return action + ":" + txnID }

// sentMsg is a message as last sent under its requestId.
type sentMsg struct {
	requestID string
	body      any
	detail    string // for the event of a re-send
}

// sentLog remembers the latest body sent under each requestId, oldest first,
// so that a message the hub answers unavailable can be sent again unchanged.
// Results are not in it: a payment keeps its own until resultAck. The zero
// value is empty and ready to use.
type sentLog struct {
	order *list.List // of *sentMsg, oldest first
	byID  map[string]*list.Element
}

// put records m, replacing what was sent before under its requestId, and
// drops the oldest entry beyond keepSent.
func (l *sentLog) put(m sentMsg) {
	if l.byID == nil {
		l.order, l.byID = list.New(), map[string]*list.Element{}
	}
	if e, ok := l.byID[m.requestID]; ok {
		e.Value = &m
		l.order.MoveToBack(e)
		return
	}
	l.byID[m.requestID] = l.order.PushBack(&m)
	if l.order.Len() > keepSent {
		oldest := l.order.Remove(l.order.Front()).(*sentMsg)
		delete(l.byID, oldest.requestID)
	}
}

func (l *sentLog) get(requestID string) (sentMsg, bool) {
	e, ok := l.byID[requestID]
	if !ok {
		return sentMsg{}, false
	}
	return *e.Value.(*sentMsg), true
}

func (l *sentLog) forget(requestID string) {
	if e, ok := l.byID[requestID]; ok {
		l.order.Remove(e)
		delete(l.byID, requestID)
	}
}

// resend is a message due to be sent again because the hub answered it
// unavailable.
type resend struct {
	requestID string
	action    string
	txnID     string
	gen       uint64 // connection that carried the unavailable answer
	due       time.Time
}

// answered takes the hub's error answer to one of the terminal's messages.
// unavailable schedules the message to be sent again after resendAfter;
// any other code is an answer that a repeat would not change, so it cancels
// a re-send still due. A successful message gets no answer, so each
// unavailable brings one re-send at most.
func (t *Terminal) answered(action, txnID string, code protocol.Code) {
	id := requestID(action, txnID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if code != protocol.CodeUnavailable {
		delete(t.resends, id)
		return
	}
	if t.resends[id] != nil {
		return // both the message and its repeat were refused: one re-send is enough
	}
	if action == protocol.ActionPaymentResult {
		if p := t.payments[txnID]; p == nil || p.result == nil || p.acked {
			return
		}
	} else if _, ok := t.sent.get(id); !ok {
		return // a card-flow message of a payment already acknowledged
	}
	r := &resend{requestID: id, action: action, txnID: txnID, gen: t.gen, due: time.Now().Add(resendAfter)}
	t.resends[id] = r
	t.queue = append(t.queue, r)
	select {
	case t.wake <- struct{}{}:
	default: // the resender is already told
	}
}

// resender sends again, in due order, the messages the hub answered
// unavailable, until ctx (the Run's) ends. One goroutine serves the whole
// Run rather than one per message: every wait is resendAfter long, so the
// queue is already in due order.
func (t *Terminal) resender(ctx context.Context) {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		var r *resend
		if len(t.queue) > 0 {
			r = t.queue[0]
			t.queue[0] = nil
			t.queue = t.queue[1:]
		}
		t.mu.Unlock()
		if r == nil {
			select {
			case <-t.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		// Measured from the answer, so that a re-send queued behind another
		// one is not delayed by that one's wait.
		if d := time.Until(r.due); d > 0 {
			if t.opts.Sleep(ctx, d) != nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		t.resendNow(ctx, r)
	}
}

// resendNow sends r's message again on the current connection, unless the
// hub has answered it otherwise meanwhile, or the result was acknowledged or
// already went out again on a newer connection, or the terminal is offline
// (an unacknowledged result then goes out when it reconnects).
func (t *Terminal) resendNow(ctx context.Context, r *resend) {
	t.mu.Lock()
	if t.resends[r.requestID] != r {
		t.mu.Unlock()
		return
	}
	delete(t.resends, r.requestID)
	var (
		p      *payment
		body   any
		detail string
	)
	if r.action == protocol.ActionPaymentResult {
		p = t.payments[r.txnID]
		if p == nil || p.result == nil || p.acked || p.sentGen > r.gen {
			t.mu.Unlock()
			return
		}
		body, detail = *p.result, describeResult(*p.result)+" "
	} else {
		m, ok := t.sent.get(r.requestID)
		if !ok {
			t.mu.Unlock()
			return
		}
		body, detail = m.body, m.detail
		if detail != "" {
			detail += " "
		}
	}
	offline := t.conn == nil
	t.mu.Unlock()
	if offline {
		t.emit(Event{Kind: EventError, Action: r.action, TransactionID: r.txnID, Detail: "not re-sent after unavailable: offline"})
		return
	}
	gen, ok := t.transmit(ctx, r.action, r.txnID, body, detail+"(re-sent after unavailable)")
	if ok && p != nil {
		t.mu.Lock()
		p.sentGen = max(p.sentGen, gen)
		t.mu.Unlock()
	}
}

// forgetFlowLocked drops the card-flow messages of txnID from the sent log.
func (t *Terminal) forgetFlowLocked(txnID string) {
	for _, a := range flowActions {
		t.sent.forget(requestID(a, txnID))
	}
}
