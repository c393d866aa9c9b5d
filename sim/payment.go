package sim

import (
	"context"
	"fmt"

	"github.com/termhub/termhub/protocol"
)

// payment is the terminal's memory of one transaction. All fields are
// guarded by Terminal.mu.
type payment struct {
	start    protocol.StartPayment
	behavior Behavior
	cancel   context.CancelFunc // ends the card flow; nil if none runs
	sig      chan bool          // signatureVerified answers, buffered
	result   *protocol.PaymentResult
	seq      uint64 // when result was made, for re-sending in order
	sentGen  uint64 // connection the result was last sent on (0: never)
	acked    bool
}

// startPayment takes a new payment or recognises a repeated one.
func (t *Terminal) startPayment(ctx context.Context, sp protocol.StartPayment) {
	id := sp.TransactionID
	t.mu.Lock()
	if p, ok := t.payments[id]; ok {
		var resend *protocol.PaymentResult
		if p.result != nil && p.sentGen != t.gen {
			p.sentGen = t.gen
			r := *p.result
			resend = &r
		}
		t.mu.Unlock()
		if resend == nil {
			t.emit(Event{Kind: EventReceived, Action: sp.Action, TransactionID: id, Detail: "(repeat of a payment in hand: no-op)"})
			return
		}
		t.emit(Event{Kind: EventReceived, Action: sp.Action, TransactionID: id, Detail: "(repeat: re-sending the cached result)"})
		t.send(ctx, protocol.ActionPaymentResult, id, *resend, describeResult(*resend)+" (cached)")
		return
	}
	b := t.opts.Script(sp)
	p := &payment{start: sp, behavior: b, sig: make(chan bool, 1)}
	t.payments[id] = p
	if b == NoAnswer {
		t.mu.Unlock()
		t.emit(Event{Kind: EventReceived, Action: sp.Action, TransactionID: id, Detail: describeStart(sp, b)})
		t.emit(Event{Kind: EventIgnored, Action: sp.Action, TransactionID: id, Detail: "never answering (no_answer)"})
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	t.wg.Add(1)
	t.mu.Unlock()
	t.emit(Event{Kind: EventReceived, Action: sp.Action, TransactionID: id, Detail: describeStart(sp, b)})
	go t.cardFlow(ctx, pctx, p)
}

// cardFlow is one payment from the terminal's point of view. ctx is the
// payment's own context, ended by a cancelPayment: it only governs the
// waits. Messages go out with runCtx, because a write whose context ends
// closes the whole WebSocket (a cancel racing a progress message would
// otherwise cut the connection).
func (t *Terminal) cardFlow(runCtx, ctx context.Context, p *payment) {
	defer t.wg.Done()
	defer p.cancel()
	sp := p.start
	id := sp.TransactionID
	say := func(action string, body any, detail string) bool {
		if ctx.Err() != nil {
			return false
		}
		t.send(runCtx, action, id, body, detail)
		return true
	}
	if !say(protocol.ActionCommandReceived, protocol.CommandReceived{TransactionID: id}, "") {
		return
	}
	stages := []string{"card_presented"}
	if t.opts.SlowCard {
		stages = append(stages, "pin_entry", "processing")
	}
	for _, s := range stages {
		if t.wait(ctx) != nil || !say(protocol.ActionPaymentProgress, protocol.PaymentProgress{TransactionID: id, Stage: s}, "stage="+s) {
			return
		}
	}

	accepted := false
	switch p.behavior {
	case Signature:
		if t.wait(ctx) != nil || !say(protocol.ActionSignatureRequired, protocol.SignatureRequiredEvent{TransactionID: id}, "waiting for signatureVerified") {
			return
		}
		select {
		case accepted = <-p.sig:
		case <-ctx.Done():
			return
		}
	case DropAndReturn:
		// The card is read and approved while the network is gone: the
		// result is cached and goes out when the terminal is back.
		if t.wait(ctx) != nil {
			return
		}
		t.finish(runCtx, p, approved(sp), false)
		t.Drop(t.opts.ReturnDelay)
		return
	}
	if t.wait(ctx) != nil {
		return
	}
	t.finish(runCtx, p, resultFor(sp, p.behavior, accepted), true)
}

// wait is one card delay.
func (t *Terminal) wait(ctx context.Context) error {
	if t.opts.CardDelay <= 0 {
		return ctx.Err()
	}
	return t.opts.Sleep(ctx, t.opts.CardDelay)
}

// finish records p's result (unless it already has one: a cancel won the
// race), ends its card flow and, if send, sends the result with ctx. The
// result is kept until resultAck.
func (t *Terminal) finish(ctx context.Context, p *payment, r protocol.PaymentResult, send bool) {
	t.mu.Lock()
	if p.result != nil {
		t.mu.Unlock()
		return
	}
	t.seq++
	p.result, p.seq = &r, t.seq
	if p.cancel != nil {
		p.cancel() // a card flow still running says nothing more
	}
	t.mu.Unlock()
	if !send {
		return
	}
	if gen, ok := t.send(ctx, protocol.ActionPaymentResult, r.TransactionID, r, describeResult(r)); ok {
		t.mu.Lock()
		p.sentGen = max(p.sentGen, gen)
		t.mu.Unlock()
	}
}

// command serves every hub → terminal command but startPayment.
func (t *Terminal) command(ctx context.Context, cmd protocol.TerminalCommand) {
	id := cmd.TransactionID
	t.mu.Lock()
	p := t.payments[id]
	t.mu.Unlock()
	switch cmd.Action {
	case protocol.ActionResultAck:
		t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id})
		t.ack(id)

	case protocol.ActionCancelPayment:
		t.mu.Lock()
		switch {
		case p != nil && p.result != nil:
			t.mu.Unlock()
			t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id, Detail: "(payment already finished: no-op)"})
			return
		case p == nil:
			// Never seen (cancelled before it reached this terminal, or the
			// simulator restarted): answering closes the hub's open cancel.
			p = &payment{start: protocol.StartPayment{TransactionID: id}, sig: make(chan bool, 1)}
			t.payments[id] = p
		}
		t.mu.Unlock()
		t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id})
		t.finish(ctx, p, cancelled(id), true)

	case protocol.ActionVoidPayment:
		t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id, Detail: cmd.Reason})
		ok := true
		t.send(ctx, protocol.ActionVoidResult, id, protocol.VoidResult{TransactionID: id, OK: &ok}, "ok")

	case protocol.ActionCapturePayment:
		t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id, Detail: fmt.Sprintf("amountMinor=%d", cmd.AmountMinor)})
		ok := true
		res := protocol.CaptureResult{TransactionID: id, OK: &ok}
		if cmd.AmountMinor > 0 {
			amt := cmd.AmountMinor
			res.AmountMinor = &amt
		}
		t.send(ctx, protocol.ActionCaptureResult, id, res, fmt.Sprintf("ok amountMinor=%d", cmd.AmountMinor))

	case protocol.ActionSignatureVerified:
		accepted := cmd.Accepted != nil && *cmd.Accepted
		t.emit(Event{Kind: EventReceived, Action: cmd.Action, TransactionID: id, Detail: fmt.Sprintf("accepted=%v", accepted)})
		if p == nil {
			return
		}
		select {
		case p.sig <- accepted:
		default: // an answer is already waiting; a repeat changes nothing
		}
	}
}

// ack forgets a result the hub has acknowledged, keeping the id a while to
// recognise repeats.
func (t *Terminal) ack(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.payments[id]
	if p == nil || p.result == nil || p.acked {
		return
	}
	p.acked = true
	t.forgetFlowLocked(id)
	t.finished = append(t.finished, id)
	if len(t.finished) > keepFinished {
		delete(t.payments, t.finished[0])
		t.finished = t.finished[1:]
	}
}

func describeStart(sp protocol.StartPayment, b Behavior) string {
	s := fmt.Sprintf("%s %s %s", sp.Type, sp.Amount, sp.Currency)
	if sp.Reference != "" {
		s += " ref=" + sp.Reference
	}
	return s + " → " + b.String()
}

func describeResult(r protocol.PaymentResult) string {
	s := r.Outcome
	if r.ResponseCode != "" {
		s += " " + r.ResponseCode
	}
	if r.AuthCode != "" {
		s += " auth=" + r.AuthCode
	}
	if r.ErrorCode != "" {
		s += " errorCode=" + r.ErrorCode
	}
	return s
}
