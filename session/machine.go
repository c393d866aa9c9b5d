package session

import (
	"time"

	"github.com/termhub/termhub/protocol"
)

// Event is something that happens to a transaction: a POS request, a
// terminal message, a connection change or a deadline.
type Event interface{ eventName() string }

// Events. POS requests may be refused with an *protocol.Error; terminal and
// timer events never are (a stale or repeated one changes nothing).
type (
	// EvSent: startPayment was written to the live terminal (only the
	// first time counts).
	EvSent struct{ ConnectionID string }
	// EvCommandReceived: the terminal took the command.
	EvCommandReceived struct{}
	// EvProgress: the card was presented (or a later stage).
	EvProgress struct{ Stage string }
	// EvSignatureRequired: the terminal asks for a signature check.
	EvSignatureRequired struct{}
	// EvSignatureAnswer: the POS (or the signature timeout, Auto) answered.
	EvSignatureAnswer struct {
		Accepted bool
		Auto     bool
	}
	// EvResult: the terminal's outcome.
	EvResult struct{ Result protocol.PaymentResult }
	// EvCancel: the POS cancels.
	EvCancel struct{}
	// EvVoid: the POS voids a COMPLETED or AUTHORIZED sale.
	EvVoid struct{ Reason string }
	// EvVoidResult: the terminal answered voidPayment.
	EvVoidResult struct {
		OK           bool
		ErrorMessage string
	}
	// EvCapture: the POS captures an AUTHORIZED sale (0 = all).
	EvCapture struct{ AmountMinor int64 }
	// EvCaptureResult: the terminal answered capturePayment.
	EvCaptureResult struct {
		OK           bool
		AmountMinor  int64
		ErrorMessage string
	}
	// EvTerminalDropped: the terminal's connection ended; it has until
	// GraceUntil to come back.
	EvTerminalDropped struct{ GraceUntil time.Time }
	// EvTerminalBack: the terminal reconnected.
	EvTerminalBack struct{ ConnectionID string }
	// EvDeadline: a deadline of Kind fell due.
	EvDeadline struct{ Kind string }
	// EvSupersede: a newer sale for the terminal replaces this PENDING one.
	EvSupersede struct{ By string }
)

func (EvSent) eventName() string              { return "sent" }
func (EvCommandReceived) eventName() string   { return "commandReceived" }
func (EvProgress) eventName() string          { return "paymentProgress" }
func (EvSignatureRequired) eventName() string { return "signatureRequired" }
func (EvSignatureAnswer) eventName() string   { return "signatureAnswer" }
func (EvResult) eventName() string            { return "paymentResult" }
func (EvCancel) eventName() string            { return "cancel" }
func (EvVoid) eventName() string              { return "void" }
func (EvVoidResult) eventName() string        { return "voidResult" }
func (EvCapture) eventName() string           { return "capture" }
func (EvCaptureResult) eventName() string     { return "captureResult" }
func (EvTerminalDropped) eventName() string   { return "terminalDropped" }
func (EvTerminalBack) eventName() string      { return "terminalReconnected" }
func (EvDeadline) eventName() string          { return "deadline" }
func (EvSupersede) eventName() string         { return "supersede" }

// Settings are the timers a transition needs.
type Settings struct {
	SignatureTimeout time.Duration
	CommandTimeout   time.Duration // how long a cancel/void/capture command stays open
}

// Effects is what a transition asks the world to do. The Store writes POS
// messages and the webhook in the same atomic commit as the state; the hub
// then sends Terminal commands to the live terminal and the POS messages to
// the live POS.
type Effects struct {
	Terminal []any               // protocol.StartPayment or protocol.TerminalCommand, in order
	POS      []protocol.POSEvent // durable messages for the owning API key
	Webhook  string              // webhook event type, "" for none
	AutoVoid bool                // a late approval was voided
	Entered  []protocol.Status   // statuses entered, in order (for metrics)
	Changed  bool                // the transaction was modified and must be saved
}

// Reason texts of paymentVoided by reason code.
var voidReasons = map[string]string{
	protocol.VoidLateAfterGrace:     "Terminal reconnected after grace period expired",
	protocol.VoidLateAfterTimeout:   "Approval arrived after the payment timed out",
	protocol.VoidLateAfterCancel:    "Approval arrived after the payment was cancelled",
	protocol.VoidLateAfterSupersede: "Approval arrived after the payment was superseded",
	protocol.VoidLateAfterDecline:   "Approval arrived after the payment was declined",
	protocol.VoidRequested:          "Voided at the merchant's request",
}

// Apply runs ev against t (modified in place) at now. It returns the effects
// to carry out, or a client error when a POS request is not allowed in t's
// state (t is then unchanged).
func Apply(t *Txn, ev Event, now time.Time, s Settings) (Effects, *protocol.Error) {
	m := machine{t: t, now: now, s: s}
	err := m.apply(ev)
	return m.fx, err
}

type machine struct {
	t   *Txn
	now time.Time
	s   Settings
	fx  Effects
}

func invalidState(t *Txn, what string) *protocol.Error {
	return protocol.Errorf(protocol.CodeInvalidState, "transactionId", "cannot %s a transaction in status %s", what, t.Status)
}

func (m *machine) apply(ev Event) *protocol.Error {
	t := m.t
	switch e := ev.(type) {
	case EvSent:
		// Only the first sending counts: the payment timeout runs from it
		// and replaces the wait for the terminal (grace). A terminal that
		// is away (AWAITING_RECONNECT) cannot have been sent anything, and
		// its grace deadline must stay.
		if !t.Active() || t.FirstSentAt != nil || t.Status == protocol.StatusAwaitingReconnect {
			return nil
		}
		m.fx.Changed = true
		t.ConnectionID = e.ConnectionID
		t.GraceDeadline = time.Time{}
		at := m.now
		t.FirstSentAt = &at
		t.PaymentDeadline = m.now.Add(time.Duration(t.TimeoutSeconds) * time.Second)

	case EvCommandReceived:
		m.ack()
		if t.Status == protocol.StatusPending {
			m.move(protocol.StatusDispatched, "terminal took the command", "")
		}

	case EvProgress:
		m.ack()
		switch t.Status {
		case protocol.StatusPending, protocol.StatusDispatched:
			m.move(protocol.StatusInProgress, "card presented ("+e.Stage+")", "")
		}

	case EvSignatureRequired:
		m.ack()
		switch t.Status {
		case protocol.StatusPending, protocol.StatusDispatched, protocol.StatusInProgress:
			t.SignatureDeadline = m.now.Add(m.s.SignatureTimeout)
			m.move(protocol.StatusAwaitingSignature, "terminal asks for a signature check", "")
		}

	case EvSignatureAnswer:
		if e.Auto {
			e.Accepted = false // an unanswered prompt is declined, never accepted
		}
		return m.signatureAnswer(e)

	case EvResult:
		m.result(e.Result)

	case EvCancel:
		switch {
		case t.Status == protocol.StatusCancelled:
			return nil // answering it again is harmless
		case t.Status == protocol.StatusPending, t.Status == protocol.StatusDispatched,
			t.Status == protocol.StatusAwaitingReconnect && (t.ResumeStatus == protocol.StatusDispatched || t.ResumeStatus == protocol.StatusPending):
			m.openCancel()
			m.final(protocol.StatusCancelled, "cancelled by the POS", "", "")
		default:
			return invalidState(t, "cancel")
		}

	case EvVoid:
		switch {
		case t.Status == protocol.StatusVoided || t.OpenVoid:
			return nil
		case t.Type != protocol.TypeSale:
			return protocol.Errorf(protocol.CodeInvalidState, "transactionId", "only a sale can be voided; refund it instead")
		case t.Status != protocol.StatusCompleted && t.Status != protocol.StatusAuthorized:
			return invalidState(t, "void")
		case t.RefundedAmountMinor > 0 || t.ReservedRefundMinor > 0:
			return protocol.Errorf(protocol.CodeInvalidState, "transactionId", "a sale with refunds cannot be voided")
		}
		t.OpenVoid, t.VoidReason = true, e.Reason
		t.CommandDeadline = m.now.Add(m.s.CommandTimeout)
		m.fx.Changed = true
		m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionVoidPayment, TransactionID: t.ID, Reason: e.Reason})

	case EvVoidResult:
		if !t.OpenVoid {
			switch {
			case !e.OK:
			case t.Status == protocol.StatusVoided && !t.VoidConfirmed:
				t.VoidConfirmed = true
				m.fx.Changed = true
			case t.Type == protocol.TypeSale && (t.Status == protocol.StatusCompleted || t.Status == protocol.StatusAuthorized):
				// A confirmation that comes after the void command expired
				// is still a fact: the terminal reversed the sale.
				t.VoidConfirmed = true
				m.void(protocol.VoidRequested, "voided by the terminal (confirmation arrived late)")
			}
			return nil
		}
		t.VoidConfirmed = t.VoidConfirmed || e.OK
		t.OpenVoid = false
		m.clearCommandDeadline()
		m.fx.Changed = true
		switch {
		case e.OK && t.Status != protocol.StatusVoided:
			m.void(protocol.VoidRequested, "voided by the terminal at the merchant's request")
		case !e.OK:
			m.note("terminal refused the void: "+e.ErrorMessage, true)
		}

	case EvCapture:
		switch {
		case t.Status == protocol.StatusCompleted && t.CaptureMode == protocol.CaptureManual:
			return nil
		case t.Status != protocol.StatusAuthorized:
			return invalidState(t, "capture")
		case t.OpenVoid:
			return protocol.Errorf(protocol.CodeInvalidState, "transactionId", "a void of this sale is in progress")
		case e.AmountMinor > t.AuthorizedAmountMinor:
			return protocol.Invalid("amountMinor", "must not exceed the authorized amount %d", t.AuthorizedAmountMinor)
		case t.OpenCapture > 0:
			return nil
		}
		amt := e.AmountMinor
		if amt == 0 {
			amt = t.AuthorizedAmountMinor
		}
		t.OpenCapture = amt
		t.CommandDeadline = m.now.Add(m.s.CommandTimeout)
		m.fx.Changed = true
		m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionCapturePayment, TransactionID: t.ID, AmountMinor: amt})

	case EvCaptureResult:
		if t.OpenCapture == 0 {
			return nil
		}
		amt := t.OpenCapture
		t.OpenCapture = 0
		m.clearCommandDeadline()
		m.fx.Changed = true
		if !e.OK {
			m.note("terminal refused the capture: "+e.ErrorMessage, true)
			return nil
		}
		if e.AmountMinor > 0 && e.AmountMinor <= amt {
			amt = e.AmountMinor
		}
		if t.Status == protocol.StatusAuthorized {
			t.AmountMinor = amt
			t.Amount = protocol.FormatAmount(amt, t.Currency)
			m.final(protocol.StatusCompleted, "captured", "", "")
		}

	case EvTerminalDropped:
		switch t.Status {
		case protocol.StatusDispatched, protocol.StatusInProgress, protocol.StatusAwaitingSignature:
			t.ResumeStatus = t.Status
			t.GraceDeadline = e.GraceUntil
			m.move(protocol.StatusAwaitingReconnect, "terminal connection lost", "")
		case protocol.StatusPending:
			t.GraceDeadline = e.GraceUntil
			m.fx.Changed = true
		}

	case EvTerminalBack:
		switch t.Status {
		case protocol.StatusAwaitingReconnect:
			t.GraceDeadline = time.Time{}
			t.ConnectionID = e.ConnectionID
			resume := t.ResumeStatus
			t.ResumeStatus = ""
			m.move(resume, "terminal reconnected", "")
		case protocol.StatusPending:
			t.GraceDeadline = time.Time{}
			t.ConnectionID = e.ConnectionID
			m.fx.Changed = true
		}

	case EvDeadline:
		m.deadline(e.Kind)

	case EvSupersede:
		if t.Status != protocol.StatusPending {
			return invalidState(t, "supersede")
		}
		m.openCancel()
		m.final(protocol.StatusSuperseded, "superseded by "+e.By, "", "")
	}
	return nil
}

// ack records that the terminal has the command (so a later timeout is
// terminal_timeout, not terminal_unreachable).
func (m *machine) ack() {
	if !m.t.Acked && m.t.Active() {
		m.t.Acked = true
		m.fx.Changed = true
	}
}

func (m *machine) signatureAnswer(e EvSignatureAnswer) *protocol.Error {
	t := m.t
	cmd := protocol.TerminalCommand{Action: protocol.ActionSignatureVerified, TransactionID: t.ID, Accepted: &e.Accepted}
	cause := "signature accepted by the POS"
	if !e.Accepted {
		cause = "signature declined by the POS"
	}
	if e.Auto {
		cause = "signature not answered in time: declined"
	}
	switch {
	case t.Status == protocol.StatusAwaitingSignature:
		t.SignatureDeadline = time.Time{}
		m.fx.Terminal = append(m.fx.Terminal, cmd)
		m.move(protocol.StatusInProgress, cause, "")
	case t.Status == protocol.StatusAwaitingReconnect && t.ResumeStatus == protocol.StatusAwaitingSignature:
		// The answer waits for the terminal: it is sent when it reconnects.
		t.SignatureDeadline = time.Time{}
		t.ResumeStatus = protocol.StatusInProgress
		accepted := e.Accepted
		t.OpenSignature = &accepted
		m.note(cause+" (delivered when the terminal reconnects)", false)
	case e.Auto:
	default:
		return invalidState(t, "answer a signature for")
	}
	return nil
}

// result applies a terminal's paymentResult.
func (m *machine) result(r protocol.PaymentResult) {
	t := m.t
	// resultAck goes last: a terminal that got the ack has also got any
	// voidPayment this result caused, so it can never drop the result while
	// the void is lost on the way.
	defer func() {
		m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionResultAck, TransactionID: t.ID})
	}()
	if t.OpenCancel {
		t.OpenCancel = false
		m.fx.Changed = true
		m.clearCommandDeadline()
	}
	if t.Active() {
		m.recordResult(r)
		switch r.Outcome {
		case protocol.OutcomeApproved:
			t.AuthorizedAmountMinor = t.AmountMinor
			if r.AmountMinor != nil && *r.AmountMinor <= t.AmountMinor {
				t.AuthorizedAmountMinor = *r.AmountMinor
			}
			if t.Type == protocol.TypeSale && t.CaptureMode == protocol.CaptureManual {
				m.endPayment()
				m.move(protocol.StatusAuthorized, "approved; awaiting capture", "")
				return
			}
			m.final(protocol.StatusCompleted, "approved", "", "")
		case protocol.OutcomeDeclined:
			cause := "declined by the card issuer"
			if r.ErrorCode == protocol.TxnErrSignatureDeclined {
				cause = "declined: signature not accepted"
			}
			m.final(protocol.StatusDeclined, cause, orDefault(r.ErrorCode, protocol.TxnErrDeclined), r.ErrorMessage)
		case protocol.OutcomeCancelled:
			m.final(protocol.StatusCancelled, "cancelled at the terminal", r.ErrorCode, r.ErrorMessage)
		default:
			m.final(protocol.StatusFailed, "terminal reported an error", orDefault(r.ErrorCode, protocol.TxnErrTerminalError), r.ErrorMessage)
		}
		return
	}
	// A result for a transaction that is already final: a repeat is harmless;
	// a late approval of an unsuccessful one is voided so nobody is charged
	// without the merchant knowing.
	if r.Outcome != protocol.OutcomeApproved {
		return
	}
	var code string
	switch t.Status {
	case protocol.StatusFailed:
		code = protocol.VoidLateAfterGrace
		if t.ErrorCode != protocol.TxnErrTerminalDisconnected && t.ErrorCode != protocol.TxnErrTerminalUnreachable {
			code = protocol.VoidLateAfterDecline
		}
	case protocol.StatusTimedOut:
		code = protocol.VoidLateAfterTimeout
	case protocol.StatusCancelled:
		code = protocol.VoidLateAfterCancel
	case protocol.StatusSuperseded:
		code = protocol.VoidLateAfterSupersede
	case protocol.StatusDeclined:
		code = protocol.VoidLateAfterDecline
	case protocol.StatusVoided:
		// The approval again while the void was never confirmed and its
		// command has lapsed (lost on a half-open connection): the card may
		// still be charged, so the void is sent again.
		if !t.OpenVoid && !t.VoidConfirmed {
			t.OpenVoid = true
			t.CommandDeadline = m.now.Add(m.s.CommandTimeout)
			m.fx.Changed = true
			m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionVoidPayment, TransactionID: t.ID, Reason: t.VoidReason})
		}
		return
	default:
		return // COMPLETED, AUTHORIZED: a repeated approval
	}
	m.recordResult(r)
	t.AuthorizedAmountMinor = t.AmountMinor
	t.OpenVoid, t.VoidReason = true, voidReasons[code]
	t.CommandDeadline = m.now.Add(m.s.CommandTimeout)
	m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionVoidPayment, TransactionID: t.ID, Reason: t.VoidReason})
	m.fx.AutoVoid = true
	m.void(code, "late approval voided automatically")
}

func (m *machine) recordResult(r protocol.PaymentResult) {
	t := m.t
	rc := r
	t.Result = &rc
	t.AuthCode, t.ResponseCode, t.RRN = r.AuthCode, r.ResponseCode, r.RRN
	t.CardScheme, t.MaskedPAN, t.EntryMode = r.CardScheme, r.MaskedPAN, r.EntryMode
	if r.Receipts != nil {
		rcpt := *r.Receipts
		t.Receipts = &rcpt
	}
	m.fx.Changed = true
}

// deadline applies a deadline that fell due.
func (m *machine) deadline(kind string) {
	t := m.t
	switch kind {
	case DeadlinePayment:
		t.PaymentDeadline = time.Time{}
		m.fx.Changed = true
		if !t.Active() {
			return
		}
		code, why := protocol.TxnErrTerminalTimeout, "no result within the payment timeout"
		if !t.Acked {
			code, why = protocol.TxnErrTerminalUnreachable, "terminal never acknowledged the payment"
		}
		m.openCancel()
		m.final(protocol.StatusTimedOut, why, code, "")
	case DeadlineGrace:
		t.GraceDeadline = time.Time{}
		m.fx.Changed = true
		switch t.Status {
		case protocol.StatusAwaitingReconnect:
			m.openCancel()
			m.final(protocol.StatusFailed, "terminal did not reconnect within the grace period", protocol.TxnErrTerminalDisconnected, "")
		case protocol.StatusPending:
			m.openCancel()
			m.final(protocol.StatusFailed, "terminal did not come back to take the payment", protocol.TxnErrTerminalUnreachable, "")
		}
	case DeadlineSignature:
		t.SignatureDeadline = time.Time{}
		m.fx.Changed = true
		_ = m.signatureAnswer(EvSignatureAnswer{Accepted: false, Auto: true})
	case DeadlineCommand:
		t.CommandDeadline = time.Time{}
		m.fx.Changed = true
		if t.OpenVoid || t.OpenCapture > 0 {
			// The POS asked and must hear that nothing came of it.
			m.note("terminal did not answer the void or capture in time", true)
		}
		t.OpenCancel, t.OpenVoid, t.OpenCapture, t.OpenSignature = false, false, 0, nil
	}
}

// openCancel leaves a cancelPayment open for the terminal and sends it now,
// unless the terminal never got the payment (nothing to cancel there).
func (m *machine) openCancel() {
	t := m.t
	if t.OpenCancel || t.FirstSentAt == nil {
		return
	}
	t.OpenCancel = true
	t.CommandDeadline = laterOf(t.CommandDeadline, m.now.Add(m.s.CommandTimeout))
	m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionCancelPayment, TransactionID: t.ID})
}

func (m *machine) clearCommandDeadline() {
	t := m.t
	if !t.OpenCancel && !t.OpenVoid && t.OpenCapture == 0 && t.OpenSignature == nil {
		t.CommandDeadline = time.Time{}
	}
}

// move changes the status, records it and tells the POS.
func (m *machine) move(to protocol.Status, cause, errCode string) {
	t := m.t
	t.Status = to
	m.fx.Entered = append(m.fx.Entered, to)
	t.Version++
	t.UpdatedAt = m.now
	t.History = append(t.History, protocol.HistoryEntry{Status: to, At: m.now, Cause: cause, ErrorCode: errCode})
	m.fx.Changed = true
	action := protocol.ActionPaymentStatusUpdate
	switch {
	case to == protocol.StatusAwaitingSignature:
		action = protocol.ActionSignatureRequired
	case to == protocol.StatusVoided:
		action = protocol.ActionPaymentVoided
	case to.Final() && to != protocol.StatusAuthorized:
		action = protocol.ActionPaymentComplete
	}
	m.fx.POS = append(m.fx.POS, protocol.POSEvent{
		Action: action, TerminalID: t.TerminalID, TransactionID: t.ID, Version: t.Version,
		Transaction: t.Wire(), Timestamp: m.now,
	})
}

// note records a history entry without a status change (a refused void or
// capture) and, when tell is set, pushes the transaction to the POS.
func (m *machine) note(cause string, tell bool) {
	t := m.t
	t.Version++
	t.UpdatedAt = m.now
	t.History = append(t.History, protocol.HistoryEntry{Status: t.Status, At: m.now, Cause: cause})
	m.fx.Changed = true
	if tell {
		m.fx.POS = append(m.fx.POS, protocol.POSEvent{
			Action: protocol.ActionPaymentStatusUpdate, TerminalID: t.TerminalID, TransactionID: t.ID,
			Version: t.Version, Transaction: t.Wire(), Timestamp: m.now,
		})
	}
}

// final moves to a final status, clears the payment timers and queues the
// webhook.
func (m *machine) final(to protocol.Status, cause, errCode, errMsg string) {
	t := m.t
	t.ErrorCode, t.ErrorMessage = errCode, errMsg
	m.endPayment()
	at := m.now
	t.CompletedAt = &at
	m.move(to, cause, errCode)
	m.fx.Webhook = WebhookType(t.Type, to)
}

// endPayment clears what only matters while the card is being taken: the
// payment, grace and signature timers, the status to resume and a kept
// signature answer. Every status that frees the terminal goes through it.
func (m *machine) endPayment() {
	t := m.t
	t.PaymentDeadline, t.GraceDeadline, t.SignatureDeadline = time.Time{}, time.Time{}, time.Time{}
	t.ResumeStatus = ""
	t.OpenSignature = nil
	m.clearCommandDeadline()
}

// void marks the transaction VOIDED and pushes paymentVoided with the
// terminal's original result.
func (m *machine) void(code, cause string) {
	t := m.t
	t.VoidReasonCode = code
	t.OpenCapture = 0 // nothing left to capture
	prevErr, prevMsg := t.ErrorCode, t.ErrorMessage
	m.final(protocol.StatusVoided, cause, "", "")
	t.ErrorCode, t.ErrorMessage = prevErr, prevMsg
	last := &m.fx.POS[len(m.fx.POS)-1]
	last.Transaction = t.Wire()
	last.ReasonCode = code
	last.Reason = voidReasons[code]
	if t.Result != nil {
		r := *t.Result
		last.OriginalPaymentResponse = &r
	}
}

// WebhookType is the webhook event type for a transaction reaching status.
func WebhookType(txnType string, s protocol.Status) string {
	prefix := "payment."
	if txnType == protocol.TypeRefund {
		prefix = "refund."
		switch s {
		case protocol.StatusCompleted:
			return "refund.completed"
		case protocol.StatusVoided:
			return "refund.voided"
		case protocol.StatusDeclined, protocol.StatusFailed, protocol.StatusTimedOut, protocol.StatusCancelled, protocol.StatusSuperseded:
			return "refund.failed"
		}
		return ""
	}
	switch s {
	case protocol.StatusCompleted:
		return prefix + "completed"
	case protocol.StatusDeclined:
		return prefix + "declined"
	case protocol.StatusFailed:
		return prefix + "failed"
	case protocol.StatusCancelled:
		return prefix + "cancelled"
	case protocol.StatusTimedOut:
		return prefix + "timed_out"
	case protocol.StatusSuperseded:
		return prefix + "superseded"
	case protocol.StatusVoided:
		return prefix + "voided"
	}
	return ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
