package protocol

import "time"

// Status is a transaction status (docs/protocol.md#transactions).
type Status string

// Transaction statuses.
const (
	StatusPending           Status = "PENDING"
	StatusDispatched        Status = "DISPATCHED"
	StatusInProgress        Status = "IN_PROGRESS"
	StatusAwaitingSignature Status = "AWAITING_SIGNATURE"
	StatusAwaitingReconnect Status = "AWAITING_RECONNECT"
	StatusAuthorized        Status = "AUTHORIZED"
	StatusCompleted         Status = "COMPLETED"
	StatusDeclined          Status = "DECLINED"
	StatusFailed            Status = "FAILED"
	StatusCancelled         Status = "CANCELLED"
	StatusTimedOut          Status = "TIMED_OUT"
	StatusSuperseded        Status = "SUPERSEDED"
	StatusVoided            Status = "VOIDED"
)

// Final reports whether s is a final status. AUTHORIZED is final for the
// payment flow (the terminal is free) though capture or void may follow.
func (s Status) Final() bool {
	switch s {
	case StatusCompleted, StatusDeclined, StatusFailed, StatusCancelled,
		StatusTimedOut, StatusSuperseded, StatusVoided, StatusAuthorized:
		return true
	}
	return false
}

// Transaction types.
const (
	TypeSale   = "sale"
	TypeRefund = "refund"
)

// Capture modes.
const (
	CaptureAuto   = "auto"
	CaptureManual = "manual"
)

// Error codes a transaction may carry in errorCode.
const (
	TxnErrTerminalDisconnected = "terminal_disconnected"
	TxnErrTerminalUnreachable  = "terminal_unreachable"
	TxnErrTerminalTimeout      = "terminal_timeout"
	TxnErrCustomerTimeout      = "customer_timeout"
	TxnErrCardError            = "card_error"
	TxnErrTerminalError        = "terminal_error"
	TxnErrDeclined             = "declined"
	TxnErrSignatureDeclined    = "signature_declined" // the POS refused the signature
	TxnErrSignatureTimeout     = "signature_timeout"  // nobody answered the signature prompt in time
)

// Receipts are the receipt texts a terminal returns.
type Receipts struct {
	Customer string `json:"customer,omitempty"`
	Merchant string `json:"merchant,omitempty"`
}

// HistoryEntry records one state change: when, to what, and why.
type HistoryEntry struct {
	Status    Status    `json:"status"`
	At        time.Time `json:"at"`
	Cause     string    `json:"cause"`
	ErrorCode string    `json:"errorCode,omitempty"`
}

// Transaction is the transaction object of docs/protocol.md#transactions as clients see it.
// String fields that do not apply are empty strings; completedAt is null
// until the transaction is final.
type Transaction struct {
	ID                    string         `json:"id"`
	MerchantID            string         `json:"merchantId"`
	TerminalID            string         `json:"terminalId"`
	ConnectionID          string         `json:"connectionId"`
	Type                  string         `json:"type"`
	ParentID              string         `json:"parentId"`
	Status                Status         `json:"status"`
	AmountMinor           int64          `json:"amountMinor"`
	Amount                string         `json:"amount"`
	Currency              string         `json:"currency"`
	Reference             string         `json:"reference"`
	CaptureMode           string         `json:"captureMode"`
	Description           string         `json:"description"`
	PrintReceipt          bool           `json:"printReceipt"`
	TimeoutSeconds        int            `json:"timeoutSeconds"`
	AuthorizedAmountMinor int64          `json:"authorizedAmountMinor"`
	RefundedAmountMinor   int64          `json:"refundedAmountMinor"`
	AuthCode              string         `json:"authCode"`
	ResponseCode          string         `json:"responseCode"`
	RRN                   string         `json:"rrn"`
	CardScheme            string         `json:"cardScheme"`
	MaskedPAN             string         `json:"maskedPan"`
	EntryMode             string         `json:"entryMode"`
	Receipts              *Receipts      `json:"receipts"`
	ErrorCode             string         `json:"errorCode"`
	ErrorMessage          string         `json:"errorMessage"`
	CreatedAt             time.Time      `json:"createdAt"`
	UpdatedAt             time.Time      `json:"updatedAt"`
	CompletedAt           *time.Time     `json:"completedAt"`
	Version               int64          `json:"version"`
	History               []HistoryEntry `json:"history"`
}

// TerminalInfo is one terminal row of `connected`, `terminals`,
// GET /v1/terminals and the ops API.
type TerminalInfo struct {
	TerminalID           string     `json:"terminalId"`
	MerchantID           string     `json:"merchantId"`
	Label                string     `json:"label"`
	Status               string     `json:"status"`
	ConnectionID         string     `json:"connectionId"`
	LastHeartbeat        *time.Time `json:"lastHeartbeat"`
	CurrentTransactionID string     `json:"currentTransactionId"`
}

// Terminal statuses (docs/protocol.md#connections).
const (
	TerminalOnline       = "online"
	TerminalReconnecting = "reconnecting"
	TerminalOffline      = "offline"
)
