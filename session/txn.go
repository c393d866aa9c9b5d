// Package session owns the transaction: its statuses and the pure
// transition function Apply ((state, event) → (state, effects)), the rules
// around it (idempotency, superseding, the per-device lock, refund limits,
// deadlines) and its Store on Redis, which commits every transition
// atomically together with its indexes and the durable messages it causes.
package session

import (
	"time"

	"github.com/termhub/termhub/protocol"
)

// Deadline kinds. Each is a member "<txnID>|<kind>" of the merchant's
// deadline set in Redis, so a restarted hub re-arms every one.
const (
	DeadlinePayment   = "payment"   // payment timeout → TIMED_OUT
	DeadlineGrace     = "grace"     // terminal reconnect grace → FAILED
	DeadlineSignature = "signature" // unanswered signature prompt → declined
	DeadlineCommand   = "command"   // open cancel/void/capture commands expire
)

// Txn is a transaction as stored: the wire object plus what the hub needs to
// carry it on (who owns it, where it was before AWAITING_RECONNECT, its
// deadlines and its open terminal commands).
type Txn struct {
	protocol.Transaction

	APIKeyID     string          `json:"apiKeyId"`               // durable messages go to this key's outbox
	Rev          int64           `json:"rev"`                    // bumped on every save; optimistic concurrency
	ResumeStatus protocol.Status `json:"resumeStatus,omitempty"` // status to return to after AWAITING_RECONNECT
	Acked        bool            `json:"acked,omitempty"`        // the terminal acknowledged the command
	FirstSentAt  *time.Time      `json:"firstSentAt,omitempty"`  // startPayment first sent; the timeout runs from here

	PaymentDeadline   time.Time `json:"paymentDeadline,omitzero"`
	GraceDeadline     time.Time `json:"graceDeadline,omitzero"`
	SignatureDeadline time.Time `json:"signatureDeadline,omitzero"`
	CommandDeadline   time.Time `json:"commandDeadline,omitzero"`

	OpenCancel    bool  `json:"openCancel,omitempty"`    // cancelPayment not yet answered by a paymentResult
	OpenVoid      bool  `json:"openVoid,omitempty"`      // voidPayment not yet answered by voidResult
	OpenCapture   int64 `json:"openCapture,omitempty"`   // capturePayment amount not yet answered
	OpenSignature *bool `json:"openSignature,omitempty"` // signatureVerified to deliver after a reconnect
	// SignatureTimedOut: the hub declined the signature because nobody answered
	// the prompt in time. The terminal's decline that follows reads the same as
	// the POS's refusal (signature_declined); this tells them apart.
	SignatureTimedOut bool `json:"signatureTimedOut,omitempty"`

	VoidConfirmed  bool                    `json:"voidConfirmed,omitempty"` // the terminal answered voidResult ok
	VoidReason     string                  `json:"voidReason,omitempty"`
	VoidReasonCode string                  `json:"voidReasonCode,omitempty"`
	Result         *protocol.PaymentResult `json:"result,omitempty"` // the terminal's result, for paymentVoided

	ReservedRefundMinor int64 `json:"reservedRefundMinor,omitempty"` // sale: refunds created but not final
}

// Deadlines returns the deadlines the transaction has set, by kind.
func (t *Txn) Deadlines() map[string]time.Time {
	d := map[string]time.Time{}
	for kind, at := range map[string]time.Time{
		DeadlinePayment: t.PaymentDeadline, DeadlineGrace: t.GraceDeadline,
		DeadlineSignature: t.SignatureDeadline, DeadlineCommand: t.CommandDeadline,
	} {
		if !at.IsZero() {
			d[kind] = at
		}
	}
	return d
}

// Deadline returns the deadline of kind, zero if none.
func (t *Txn) Deadline(kind string) time.Time {
	switch kind {
	case DeadlinePayment:
		return t.PaymentDeadline
	case DeadlineGrace:
		return t.GraceDeadline
	case DeadlineSignature:
		return t.SignatureDeadline
	case DeadlineCommand:
		return t.CommandDeadline
	}
	return time.Time{}
}

// Active reports whether the transaction still occupies its terminal.
func (t *Txn) Active() bool { return !t.Status.Final() }

// Wire returns a copy of the client-facing transaction, history entries
// included: it leaves the engine, and what its receiver does to it must not
// reach the engine's copies.
func (t *Txn) Wire() *protocol.Transaction {
	w := t.Transaction
	w.History = append([]protocol.HistoryEntry(nil), t.History...)
	return &w
}

// sharedHistory is h for an engine copy of a transaction (Clone) to hold
// without copying its entries: the engine only ever appends to a history,
// never changes an entry in place, and the slice is capped at its length,
// so that an append to either side allocates anew instead of writing into
// the other's view. Empty is nil, as a copy by append was.
func sharedHistory(h []protocol.HistoryEntry) []protocol.HistoryEntry {
	if len(h) == 0 {
		return nil
	}
	return h[:len(h):len(h)]
}

// OpenCommands lists every command for the terminal that is still open, in
// the order a reconnecting terminal should see them (docs/protocol.md#terminal-protocol).
func (t *Txn) OpenCommands() []TerminalCommand {
	var out []TerminalCommand
	if t.Active() {
		out = append(out, t.StartPayment())
	}
	if t.OpenSignature != nil {
		out = append(out, protocol.TerminalCommand{Action: protocol.ActionSignatureVerified, TransactionID: t.ID, Accepted: t.OpenSignature})
	}
	if t.OpenCancel {
		out = append(out, protocol.TerminalCommand{Action: protocol.ActionCancelPayment, TransactionID: t.ID})
	}
	if t.OpenVoid {
		out = append(out, protocol.TerminalCommand{Action: protocol.ActionVoidPayment, TransactionID: t.ID, Reason: t.VoidReason})
	}
	if t.OpenCapture > 0 {
		out = append(out, protocol.TerminalCommand{Action: protocol.ActionCapturePayment, TransactionID: t.ID, AmountMinor: t.OpenCapture})
	}
	return out
}

// HasOpenCommands reports whether anything is still owed to the terminal.
func (t *Txn) HasOpenCommands() bool {
	return t.Active() || t.OpenSignature != nil || t.OpenCancel || t.OpenVoid || t.OpenCapture > 0
}

// StartPayment is the startPayment command for the transaction.
func (t *Txn) StartPayment() protocol.StartPayment {
	return protocol.StartPayment{
		Action: protocol.ActionStartPayment, TransactionID: t.ID, Type: t.Type,
		AmountMinor: t.AmountMinor, Amount: t.Amount, Currency: t.Currency, Reference: t.Reference,
		CaptureMode: t.CaptureMode, PrintReceipt: t.PrintReceipt, Description: t.Description,
	}
}

// RefundableMinor is what remains refundable of a sale.
func (t *Txn) RefundableMinor() int64 {
	return t.AmountMinor - t.RefundedAmountMinor - t.ReservedRefundMinor
}
