package session

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/termhub/termhub/protocol"
)

// encode is t's stored copy (appendJSON into a buffer that fits a
// transaction with a few history entries).
func (t *Txn) encode() ([]byte, error) { return t.appendJSON(make([]byte, 0, 1536)) }

// appendJSON appends t's JSON to b, byte for byte what encoding/json
// writes for it by reflection (the transaction's fields, then Txn's own,
// omitempty and omitzero honoured), in a third of the time: it is the
// stored copy every commit writes (protocol/transaction_json.go).
// TestTxnJSONMatchesEncodingJSON compares the two.
func (t *Txn) appendJSON(b []byte) ([]byte, error) {
	b, _, err := t.appendJSONWire(b)
	return b, err
}

// appendJSONWire is appendJSON that also reports where, in b, the
// transaction's wire JSON (its protocol.Transaction) ends, closing brace
// excepted: the stored copy starts as the wire JSON does, and commits
// splice that part into the messages that carry it (savedTxn).
func (t *Txn) appendJSONWire(b []byte) ([]byte, int, error) {
	b, err := t.Transaction.AppendJSONFields(append(b, '{'), false)
	if err != nil {
		return nil, 0, err
	}
	wireEnd := len(b)
	b = protocol.AppendJSONString(append(b, `,"apiKeyId":`...), t.APIKeyID)
	b = strconv.AppendInt(append(b, `,"rev":`...), t.Rev, 10)
	if t.ResumeStatus != "" {
		b = protocol.AppendJSONString(append(b, `,"resumeStatus":`...), string(t.ResumeStatus))
	}
	if t.Acked {
		b = append(b, `,"acked":true`...)
	}
	if t.FirstSentAt != nil {
		if b, err = protocol.AppendJSONTime(append(b, `,"firstSentAt":`...), *t.FirstSentAt); err != nil {
			return nil, 0, err
		}
	}
	for _, d := range [...]struct {
		key string
		at  time.Time
	}{
		{`,"paymentDeadline":`, t.PaymentDeadline}, {`,"graceDeadline":`, t.GraceDeadline},
		{`,"signatureDeadline":`, t.SignatureDeadline}, {`,"commandDeadline":`, t.CommandDeadline},
	} {
		if !d.at.IsZero() {
			if b, err = protocol.AppendJSONTime(append(b, d.key...), d.at); err != nil {
				return nil, 0, err
			}
		}
	}
	if t.OpenCancel {
		b = append(b, `,"openCancel":true`...)
	}
	if t.OpenVoid {
		b = append(b, `,"openVoid":true`...)
	}
	if t.OpenCapture != 0 {
		b = strconv.AppendInt(append(b, `,"openCapture":`...), t.OpenCapture, 10)
	}
	if t.OpenSignature != nil {
		b = strconv.AppendBool(append(b, `,"openSignature":`...), *t.OpenSignature)
	}
	if t.SignatureTimedOut {
		b = append(b, `,"signatureTimedOut":true`...)
	}
	if t.VoidConfirmed {
		b = append(b, `,"voidConfirmed":true`...)
	}
	if t.VoidReason != "" {
		b = protocol.AppendJSONString(append(b, `,"voidReason":`...), t.VoidReason)
	}
	if t.VoidReasonCode != "" {
		b = protocol.AppendJSONString(append(b, `,"voidReasonCode":`...), t.VoidReasonCode)
	}
	if t.Result != nil {
		r, err := json.Marshal(t.Result)
		if err != nil {
			return nil, 0, err
		}
		b = append(append(b, `,"result":`...), r...)
	}
	if t.ReservedRefundMinor != 0 {
		b = strconv.AppendInt(append(b, `,"reservedRefundMinor":`...), t.ReservedRefundMinor, 10)
	}
	return append(b, '}'), wireEnd, nil
}
