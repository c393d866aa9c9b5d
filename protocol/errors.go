package protocol

import (
	"fmt"
	"net/http"
)

// Code is a machine-readable error code (docs/protocol.md#transactions). The set is closed:
// clients switch on these strings.
type Code string

// Error codes of docs/protocol.md#transactions.
const (
	CodeInvalidRequest       Code = "invalid_request"
	CodeUnknownAction        Code = "unknown_action"
	CodeUnauthorized         Code = "unauthorized"
	CodeInsufficientScopes   Code = "insufficient_scopes"
	CodeNotFound             Code = "not_found"
	CodeTerminalNotFound     Code = "terminal_not_found"
	CodeTransactionNotFound  Code = "transaction_not_found"
	CodeDeviceBusy           Code = "device_busy"
	CodeReferenceConflict    Code = "reference_conflict"
	CodeInvalidState         Code = "invalid_state"
	CodeSessionDisplaced     Code = "session_displaced"
	CodeDuplicateRequest     Code = "duplicate_request"
	CodeIdempotencyKeyReused Code = "idempotency_key_reused"
	CodeTerminalOffline      Code = "terminal_offline"
	CodeRefundExceedsAmount  Code = "refund_exceeds_amount"
	CodeRateLimited          Code = "rate_limited"
	CodeUnavailable          Code = "unavailable"
	CodeInternal             Code = "internal"
)

// HTTPStatus is the HTTP status that goes with a code.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidRequest, CodeUnknownAction:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeInsufficientScopes:
		return http.StatusForbidden
	case CodeNotFound, CodeTerminalNotFound, CodeTransactionNotFound:
		return http.StatusNotFound
	case CodeDeviceBusy, CodeReferenceConflict, CodeInvalidState, CodeSessionDisplaced, CodeDuplicateRequest:
		return http.StatusConflict
	case CodeIdempotencyKeyReused, CodeTerminalOffline, CodeRefundExceedsAmount:
		return http.StatusUnprocessableEntity
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Error is a request failure that is safe to show a client: a code, a human
// message and, where one field is at fault, its JSON name.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// RetryAfter is, for rate_limited, how many seconds until the limit
	// lets the client in again: the HTTP Retry-After header, and the
	// WebSocket error frame's retryAfter.
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (field %s)", e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf builds an Error with a formatted message.
func Errorf(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Invalid is shorthand for an invalid_request naming field.
func Invalid(field, format string, args ...any) *Error {
	return Errorf(CodeInvalidRequest, field, format, args...)
}

// ErrorBody is the one HTTP error body: {"error":{"code","message","field"?}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// ResultStatus is the HTTP status of a successful answer about a
// transaction: 201 when the request created it, else 200.
func ResultStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}
