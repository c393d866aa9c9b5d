package hub

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/redisx"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// Engine is what the hub needs from the transaction engine
// (session.Engine), in two parts by caller. Both front ends (WebSocket and
// REST) call it the same way; neither holds rules of its own.
type Engine interface {
	Requests
	TerminalSide
}

// Requests is what a POS request needs (Hub.Perform).
type Requests interface {
	Create(ctx context.Context, in session.CreateInput) (session.Result, error)
	Refund(ctx context.Context, in session.RefundInput) (session.Result, error)
	Act(ctx context.Context, in session.ActInput) (session.Result, error)
	Get(ctx context.Context, merchantID, id string) (*protocol.Transaction, error)
	// CarriedOut returns once every commit of the API key that has started
	// has carried out its effects (its reply included) or given up, or when
	// ctx ends.
	CarriedOut(ctx context.Context, merchantID, apiKeyID string)
}

// TerminalSide is what a terminal's connection and the terminals' status
// need: its messages, its coming and going, and each terminal's current
// transaction for greetings and terminal lists.
type TerminalSide interface {
	// TerminalEvents applies a terminal's messages in order and calls
	// refused, in order too, for each one that was not applied.
	TerminalEvents(ctx context.Context, merchantID, deviceID string, bodies []any, refused func(i int, err error))
	TerminalConnected(ctx context.Context, merchantID, deviceID, connID string) ([]session.TerminalCommand, error)
	TerminalDropped(ctx context.Context, merchantID, deviceID string, graceUntil time.Time) error
	Current(ctx context.Context, merchantID string, devices []string) (map[string]string, error)
	// CurrentKnown is Current from this process's memory, for when Redis
	// does not answer.
	CurrentKnown(merchantID string, devices []string) map[string]string
}

// ErrNoEngine answers requests when the hub has no engine (it serves
// connections only).
var ErrNoEngine = protocol.Errorf(protocol.CodeUnavailable, "", "transactions are not available on this hub")

// Perform runs one POS request against the engine, for the WebSocket and
// the HTTP API alike. body is a validated request type; idemKey comes from
// the Idempotency-Key header or the idempotencyKey field.
func (h *Hub) Perform(ctx context.Context, p Principal, body any, idemKey string) (session.Result, error) {
	if h.opts.Engine == nil {
		return session.Result{}, ErrNoEngine
	}
	var e Requests = h.opts.Engine
	switch r := body.(type) {
	case *protocol.PaymentRequest:
		return e.Create(ctx, session.CreateInput{MerchantID: p.MerchantID, APIKeyID: p.KeyID, Req: r, IdemKey: idemKey})
	case *protocol.RefundRequest:
		return e.Refund(ctx, session.RefundInput{MerchantID: p.MerchantID, APIKeyID: p.KeyID, Req: r, IdemKey: idemKey})
	case *protocol.CancelRequest:
		return e.Act(ctx, session.ActInput{MerchantID: p.MerchantID, TxnID: r.TransactionID, Action: protocol.ActionCancel, Body: r, Event: session.EvCancel{}, IdemKey: idemKey})
	case *protocol.VoidRequest:
		return e.Act(ctx, session.ActInput{MerchantID: p.MerchantID, TxnID: r.TransactionID, Action: protocol.ActionVoid, Body: r, Event: session.EvVoid{Reason: r.Reason}, IdemKey: idemKey})
	case *protocol.CaptureRequest:
		amt := int64(0)
		if r.AmountMinor != nil {
			amt = *r.AmountMinor
		}
		return e.Act(ctx, session.ActInput{MerchantID: p.MerchantID, TxnID: r.TransactionID, Action: protocol.ActionCapture, Body: r, Event: session.EvCapture{AmountMinor: amt}, IdemKey: idemKey})
	case *protocol.SignatureVerificationRequest:
		return e.Act(ctx, session.ActInput{MerchantID: p.MerchantID, TxnID: r.TransactionID, Action: protocol.ActionSignatureVerification, Body: r, Event: session.EvSignatureAnswer{Accepted: *r.Accepted}, IdemKey: idemKey})
	case *protocol.GetTransactionStatusRequest:
		t, err := e.Get(ctx, p.MerchantID, r.TransactionID)
		return session.Result{Txn: t, Status: 200}, err
	}
	return session.Result{}, protocol.Errorf(protocol.CodeUnknownAction, "action", "unsupported action")
}

// ClientError turns an engine error into what the client sees; anything
// that is not a client error is logged and answered as internal.
func (h *Hub) ClientError(err error, log zerolog.Logger) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, session.ErrUnavailable) || redisx.Outage(err) {
		// Answered 503: the outcome is unknown, and a retry by reference
		// or Idempotency-Key is safe (docs/ops.md#when-redis-stalls-restarts-or-fails-over). Redis's outages are
		// reported by its probe (redisx.Health), not once per request.
		log.Debug().Err(err).Msg("store unavailable")
		return protocol.Errorf(protocol.CodeUnavailable, "", "the store is unavailable; the request may or may not have been applied: retry it (same reference or Idempotency-Key) shortly")
	}
	log.Error().Err(err).Msg("request failed")
	return protocol.Errorf(protocol.CodeInternal, "", "internal error; the request may be retried")
}
