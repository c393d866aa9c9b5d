package session

import (
	"context"

	"github.com/termhub/termhub/protocol"
)

// ActInput is a lifecycle request on an existing transaction.
type ActInput struct {
	MerchantID string
	TxnID      string
	Action     string // protocol action name, for idempotency fingerprints
	Body       any    // the request, for idempotency fingerprints
	Event      Event
	IdemKey    string
}

// Act applies a POS lifecycle request: cancel, void, capture or a
// signature answer.
func (e *Engine) Act(ctx context.Context, in ActInput) (Result, error) {
	var idem *idemWrite
	if in.IdemKey != "" {
		fp := fingerprint(in.Action, in.Body)
		if r, done, err := e.replayIdem(ctx, in.MerchantID, in.IdemKey, fp); done || err != nil {
			return r, err
		}
		idem = &idemWrite{key: in.IdemKey, fp: fp}
	}
	t, perr, err := e.update(ctx, in.MerchantID, in.TxnID, in.Event, idem)
	if ce := toClientErr(err); ce != nil {
		return Result{}, ce
	}
	if err != nil {
		return Result{}, err
	}
	if perr != nil {
		return Result{}, perr
	}
	return Result{Txn: t.Wire(), Status: protocol.ResultStatus(false)}, nil
}

// declineOf is the errorCode and history cause of a terminal's decline. The
// terminal declines a signature it was told was not accepted with
// signature_declined whether the POS refused it or nobody answered; the hub
// knows which (SignatureTimedOut) and says signature_timeout for the latter,
// so a POS can tell a customer's refusal from an unattended till.
func declineOf(t *Txn, r protocol.PaymentResult) (code, cause string) {
	switch {
	case t.SignatureTimedOut && (r.ErrorCode == protocol.TxnErrSignatureDeclined || r.ErrorCode == ""):
		return protocol.TxnErrSignatureTimeout, "declined: signature not answered in time"
	case r.ErrorCode == protocol.TxnErrSignatureDeclined:
		return r.ErrorCode, "declined: signature not accepted"
	}
	return orDefault(r.ErrorCode, protocol.TxnErrDeclined), "declined by the card issuer"
}

// captureConflict refuses a capture repeated with an amount other than the
// one already captured (or being captured): answering it like the first would
// tell the POS its new amount was taken when it was not. No amount means "the
// same capture again" and is answered as before.
func captureConflict(asked, captured int64, how string) *protocol.Error {
	if asked == 0 || asked == captured {
		return nil
	}
	return protocol.Errorf(protocol.CodeInvalidState, "amountMinor",
		"this sale %s for amountMinor %d; a capture for %d is a different request", how, captured, asked)
}
