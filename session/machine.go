package session

import (
	"time"

	"github.com/termhub/termhub/protocol"
)

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
	Terminal []TerminalCommand   // in order
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

// apply dispatches ev to the method that handles its kind of event.
func (m *machine) apply(ev Event) *protocol.Error {
	switch e := ev.(type) {
	case EvSent:
		m.sent(e)
	case EvCommandReceived:
		m.commandReceived()
	case EvProgress:
		m.progress(e)
	case EvSignatureRequired:
		m.signatureRequired()
	case EvSignatureAnswer:
		if e.Auto {
			e.Accepted = false // an unanswered prompt is declined, never accepted
		}
		return m.signatureAnswer(e)
	case EvResult:
		m.result(e.Result)
	case EvCancel:
		return m.cancel()
	case EvVoid:
		return m.voidRequest(e)
	case EvVoidResult:
		m.voidResult(e)
	case EvCapture:
		return m.capture(e)
	case EvCaptureResult:
		m.captureResult(e)
	case EvTerminalDropped:
		m.terminalDropped(e)
	case EvTerminalBack:
		m.terminalBack(e)
	case EvDeadline:
		m.deadline(e.Kind)
	case EvSupersede:
		return m.supersede(e)
	}
	return nil
}

// sent records the first sending of the payment: the payment timeout runs
// from it and replaces the wait for the terminal (grace). Later sendings
// do not count. A terminal that is away (AWAITING_RECONNECT) cannot have
// been sent anything, and its grace deadline must stay.
func (m *machine) sent(e EvSent) {
	t := m.t
	if !t.Active() || t.FirstSentAt != nil || t.Status == protocol.StatusAwaitingReconnect {
		return
	}
	m.fx.Changed = true
	t.ConnectionID = e.ConnectionID
	t.GraceDeadline = time.Time{}
	at := m.now
	t.FirstSentAt = &at
	t.PaymentDeadline = m.now.Add(time.Duration(t.TimeoutSeconds) * time.Second)
}

func (m *machine) commandReceived() {
	m.ack()
	if m.t.Status == protocol.StatusPending {
		m.move(protocol.StatusDispatched, "terminal took the command", "")
	}
}

func (m *machine) progress(e EvProgress) {
	m.ack()
	switch m.t.Status {
	case protocol.StatusPending, protocol.StatusDispatched:
		m.move(protocol.StatusInProgress, "card presented ("+e.Stage+")", "")
	}
}

func (m *machine) signatureRequired() {
	m.ack()
	switch m.t.Status {
	case protocol.StatusPending, protocol.StatusDispatched, protocol.StatusInProgress:
		m.t.SignatureDeadline = m.now.Add(m.s.SignatureTimeout)
		m.move(protocol.StatusAwaitingSignature, "terminal asks for a signature check", "")
	}
}

// cancel is the POS's cancel: possible until the card is presented.
func (m *machine) cancel() *protocol.Error {
	t := m.t
	switch {
	case t.Status == protocol.StatusCancelled:
		return nil // answering it again is harmless
	case t.Status == protocol.StatusPending, t.Status == protocol.StatusDispatched,
		t.Status == protocol.StatusAwaitingReconnect && (t.ResumeStatus == protocol.StatusDispatched || t.ResumeStatus == protocol.StatusPending):
		m.openCancel()
		m.final(protocol.StatusCancelled, "cancelled by the POS", "", "")
		return nil
	default:
		return invalidState(t, "cancel")
	}
}

// voidRequest is the POS's void of a sale: it opens a voidPayment command.
func (m *machine) voidRequest(e EvVoid) *protocol.Error {
	t := m.t
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
	return nil
}

// voidResult is the terminal's answer to a voidPayment.
func (m *machine) voidResult(e EvVoidResult) {
	t := m.t
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
		return
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
}

// capture is the POS's capture of an authorization: it opens a
// capturePayment command.
func (m *machine) capture(e EvCapture) *protocol.Error {
	t := m.t
	switch {
	case t.Status == protocol.StatusCompleted && t.CaptureMode == protocol.CaptureManual:
		// A repeat is answered again; another amount is a different request.
		return captureConflict(e.AmountMinor, t.AmountMinor, "was captured")
	case t.Status != protocol.StatusAuthorized:
		return invalidState(t, "capture")
	case t.OpenVoid:
		return protocol.Errorf(protocol.CodeInvalidState, "transactionId", "a void of this sale is in progress")
	case e.AmountMinor > t.AuthorizedAmountMinor:
		return protocol.Invalid("amountMinor", "must not exceed the authorized amount %d", t.AuthorizedAmountMinor)
	case t.OpenCapture > 0:
		return captureConflict(e.AmountMinor, t.OpenCapture, "is being captured")
	}
	amt := e.AmountMinor
	if amt == 0 {
		amt = t.AuthorizedAmountMinor
	}
	t.OpenCapture = amt
	t.CommandDeadline = m.now.Add(m.s.CommandTimeout)
	m.fx.Changed = true
	m.fx.Terminal = append(m.fx.Terminal, protocol.TerminalCommand{Action: protocol.ActionCapturePayment, TransactionID: t.ID, AmountMinor: amt})
	return nil
}

// captureResult is the terminal's answer to a capturePayment.
func (m *machine) captureResult(e EvCaptureResult) {
	t := m.t
	if t.OpenCapture == 0 {
		return
	}
	amt := t.OpenCapture
	t.OpenCapture = 0
	m.clearCommandDeadline()
	m.fx.Changed = true
	if !e.OK {
		m.note("terminal refused the capture: "+e.ErrorMessage, true)
		return
	}
	if e.AmountMinor > 0 && e.AmountMinor <= amt {
		amt = e.AmountMinor
	}
	if t.Status == protocol.StatusAuthorized {
		t.AmountMinor = amt
		t.Amount = protocol.FormatAmount(amt, t.Currency)
		m.final(protocol.StatusCompleted, "captured", "", "")
	}
}

// terminalDropped starts the grace period of a transaction whose terminal
// went away.
func (m *machine) terminalDropped(e EvTerminalDropped) {
	t := m.t
	switch t.Status {
	case protocol.StatusDispatched, protocol.StatusInProgress, protocol.StatusAwaitingSignature:
		t.ResumeStatus = t.Status
		t.GraceDeadline = e.GraceUntil
		m.move(protocol.StatusAwaitingReconnect, "terminal connection lost", "")
	case protocol.StatusPending:
		t.GraceDeadline = e.GraceUntil
		m.fx.Changed = true
	}
}

// terminalBack ends the grace period: the transaction resumes where it
// was.
func (m *machine) terminalBack(e EvTerminalBack) {
	t := m.t
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
}

// supersede ends a PENDING transaction that a new one on its terminal
// replaces.
func (m *machine) supersede(e EvSupersede) *protocol.Error {
	if m.t.Status != protocol.StatusPending {
		return invalidState(m.t, "supersede")
	}
	m.openCancel()
	m.final(protocol.StatusSuperseded, "superseded by "+e.By, "", "")
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
		t.SignatureDeadline, t.SignatureTimedOut = time.Time{}, e.Auto
		m.fx.Terminal = append(m.fx.Terminal, cmd)
		m.move(protocol.StatusInProgress, cause, "")
	case t.Status == protocol.StatusAwaitingReconnect && t.ResumeStatus == protocol.StatusAwaitingSignature:
		// The answer waits for the terminal: it is sent when it reconnects.
		t.SignatureDeadline, t.SignatureTimedOut = time.Time{}, e.Auto
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
			code, cause := declineOf(t, r)
			m.final(protocol.StatusDeclined, cause, code, r.ErrorMessage)
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
