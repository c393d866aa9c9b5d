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
