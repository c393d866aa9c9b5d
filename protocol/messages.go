package protocol

import (
	"encoding/json"
	"time"
)

// ---- POS → hub ----

// PaymentRequest asks for a sale on a terminal. After Validate, AmountMinor
// holds the amount in minor units whichever of amount/amountMinor was sent.
type PaymentRequest struct {
	TerminalID     string          `json:"terminalId"`
	AmountMinor    *int64          `json:"amountMinor,omitempty"`
	Amount         json.RawMessage `json:"amount,omitempty"` // decimal string (a JSON number literal is taken exactly too)
	Currency       string          `json:"currency"`
	Reference      string          `json:"reference"`
	CaptureMode    string          `json:"captureMode,omitempty"`
	Description    string          `json:"description,omitempty"`
	PrintReceipt   *bool           `json:"printReceipt,omitempty"`
	TimeoutSeconds *int            `json:"timeoutSeconds,omitempty"`
	IdempotencyKey string          `json:"idempotencyKey,omitempty"`
}

// CancelRequest cancels a sale before the card is presented.
type CancelRequest struct {
	TransactionID  string `json:"transactionId"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

// RefundRequest refunds all or part of a completed sale.
type RefundRequest struct {
	TransactionID  string          `json:"transactionId"`
	AmountMinor    *int64          `json:"amountMinor,omitempty"`
	Amount         json.RawMessage `json:"amount,omitempty"`
	Reference      string          `json:"reference,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	IdempotencyKey string          `json:"idempotencyKey,omitempty"`
}

// VoidRequest reverses a COMPLETED or AUTHORIZED sale.
type VoidRequest struct {
	TransactionID  string `json:"transactionId"`
	Reason         string `json:"reason,omitempty"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

// CaptureRequest completes an AUTHORIZED sale, optionally for less.
type CaptureRequest struct {
	TransactionID  string `json:"transactionId"`
	AmountMinor    *int64 `json:"amountMinor,omitempty"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

// SignatureVerificationRequest answers a signature prompt.
type SignatureVerificationRequest struct {
	TransactionID  string `json:"transactionId"`
	Accepted       *bool  `json:"accepted"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

// GetTransactionStatusRequest asks for a transaction as it stands.
type GetTransactionStatusRequest struct {
	TransactionID string `json:"transactionId"`
}

// ListTerminalsRequest asks for the merchant's terminals.
type ListTerminalsRequest struct{}

// AckRequest acknowledges messageId and every earlier durable message.
type AckRequest struct {
	MessageID string `json:"messageId"`
}

// ---- terminal → hub ----

// CommandReceived says the terminal took a command (→ DISPATCHED).
type CommandReceived struct {
	TransactionID string `json:"transactionId"`
}

// PaymentProgress reports a card stage (→ IN_PROGRESS).
type PaymentProgress struct {
	TransactionID string `json:"transactionId"`
	Stage         string `json:"stage"`
}

// SignatureRequiredEvent asks the POS to check the customer's signature.
type SignatureRequiredEvent struct {
	TransactionID string `json:"transactionId"`
}

// Payment outcomes a terminal reports.
const (
	OutcomeApproved  = "approved"
	OutcomeDeclined  = "declined"
	OutcomeError     = "error"
	OutcomeCancelled = "cancelled"
)

// PaymentResult is a terminal's outcome for a sale or refund. It is also
// the originalPaymentResponse of a paymentVoided.
type PaymentResult struct {
	TransactionID string    `json:"transactionId"`
	Outcome       string    `json:"outcome"`
	AuthCode      string    `json:"authCode,omitempty"`
	ResponseCode  string    `json:"responseCode,omitempty"`
	RRN           string    `json:"rrn,omitempty"`
	CardScheme    string    `json:"cardScheme,omitempty"`
	MaskedPAN     string    `json:"maskedPan,omitempty"`
	EntryMode     string    `json:"entryMode,omitempty"`
	Receipts      *Receipts `json:"receipts,omitempty"`
	ErrorCode     string    `json:"errorCode,omitempty"` // customer_timeout, card_error, terminal_error
	ErrorMessage  string    `json:"errorMessage,omitempty"`
	AmountMinor   *int64    `json:"amountMinor,omitempty"` // authorized amount, if the terminal reports it
}

// VoidResult answers a voidPayment.
type VoidResult struct {
	TransactionID string `json:"transactionId"`
	OK            *bool  `json:"ok"`
	ErrorMessage  string `json:"errorMessage,omitempty"`
}

// CaptureResult answers a capturePayment.
type CaptureResult struct {
	TransactionID string `json:"transactionId"`
	OK            *bool  `json:"ok"`
	AmountMinor   *int64 `json:"amountMinor,omitempty"`
	ErrorMessage  string `json:"errorMessage,omitempty"`
}

// ---- hub → POS ----

// POSConnected greets a POS connection.
type POSConnected struct {
	Action       string         `json:"action"`
	ConnectionID string         `json:"connectionId"`
	MerchantID   string         `json:"merchantId"`
	APIKeyID     string         `json:"apiKeyId"`
	ServerTime   time.Time      `json:"serverTime"`
	Terminals    []TerminalInfo `json:"terminals"`
}

// Response is the reply to a POS action that carries a transaction.
type Response struct {
	Action      string          `json:"action"`
	RequestID   json.RawMessage `json:"requestId,omitempty"`
	Transaction *Transaction    `json:"transaction,omitempty"`
	Created     *bool           `json:"created,omitempty"`
}

// TerminalsReply answers listTerminals.
type TerminalsReply struct {
	Action    string          `json:"action"`
	RequestID json.RawMessage `json:"requestId,omitempty"`
	Terminals []TerminalInfo  `json:"terminals"`
}

// ErrorReply answers a request that failed, on either WebSocket.
type ErrorReply struct {
	Action    string          `json:"action"`
	RequestID json.RawMessage `json:"requestId,omitempty"`
	Code      Code            `json:"code"`
	Message   string          `json:"message"`
	Field     string          `json:"field,omitempty"`
	// RetryAfter: seconds until a rate_limited client may go on.
	RetryAfter int `json:"retryAfter,omitempty"`
}

// NewErrorReply builds the error reply for e.
func NewErrorReply(requestID json.RawMessage, e *Error) ErrorReply {
	return ErrorReply{Action: ActionError, RequestID: requestID, Code: e.Code, Message: e.Message, Field: e.Field, RetryAfter: e.RetryAfter}
}

// TerminalStatusUpdate tells POS and ops that a terminal's status or
// connection changed. It is not durable: `connected` carries the snapshot.
type TerminalStatusUpdate struct {
	Action         string    `json:"action"`
	TerminalID     string    `json:"terminalId"`
	ConnectionID   string    `json:"connectionId"`
	Status         string    `json:"status"`
	PreviousStatus string    `json:"previousStatus"`
	Timestamp      time.Time `json:"timestamp"`
}

// Auto-void reason codes of paymentVoided.
const (
	VoidLateAfterGrace     = "late_after_grace"
	VoidLateAfterTimeout   = "late_after_timeout"
	VoidLateAfterCancel    = "late_after_cancel"
	VoidLateAfterSupersede = "late_after_supersede"
	VoidLateAfterDecline   = "late_after_decline"
	VoidRequested          = "requested"
)

// POSEvent is a durable message about a transaction: paymentStatusUpdate,
// signatureRequired, paymentComplete or paymentVoided. MessageID is the id
// of its entry in the API key's outbox, set when it is delivered.
type POSEvent struct {
	Action                  string         `json:"action"`
	MessageID               string         `json:"messageId,omitempty"`
	TerminalID              string         `json:"terminalId"`
	TransactionID           string         `json:"transactionId"`
	Version                 int64          `json:"version"`
	Transaction             *Transaction   `json:"transaction"`
	ReasonCode              string         `json:"reasonCode,omitempty"`
	Reason                  string         `json:"reason,omitempty"`
	OriginalPaymentResponse *PaymentResult `json:"originalPaymentResponse,omitempty"`
	Timestamp               time.Time      `json:"timestamp"`
}

// ---- hub → terminal ----

// TerminalConnected greets a terminal connection.
type TerminalConnected struct {
	Action            string    `json:"action"`
	ConnectionID      string    `json:"connectionId"`
	DeviceID          string    `json:"deviceId"`
	ServerTime        time.Time `json:"serverTime"`
	HeartbeatInterval int       `json:"heartbeatInterval"`
}

// StartPayment tells a terminal to take a card for a sale or refund.
type StartPayment struct {
	Action        string `json:"action"`
	TransactionID string `json:"transactionId"`
	Type          string `json:"type"`
	AmountMinor   int64  `json:"amountMinor"`
	Amount        string `json:"amount"`
	Currency      string `json:"currency"`
	Reference     string `json:"reference"`
	CaptureMode   string `json:"captureMode"`
	PrintReceipt  bool   `json:"printReceipt"`
	Description   string `json:"description"`
}

// TerminalCommand is every other hub → terminal command: cancelPayment,
// voidPayment, capturePayment, signatureVerified and resultAck.
type TerminalCommand struct {
	Action        string `json:"action"`
	TransactionID string `json:"transactionId"`
	Reason        string `json:"reason,omitempty"`
	AmountMinor   int64  `json:"amountMinor,omitempty"`
	Accepted      *bool  `json:"accepted,omitempty"`
}

// TerminalAction is the command's action. With it StartPayment and
// TerminalCommand are the commands a terminal is sent (session.TerminalCommand).
func (m StartPayment) TerminalAction() string { return m.Action }

// TerminalAction is the command's action.
func (m TerminalCommand) TerminalAction() string { return m.Action }
